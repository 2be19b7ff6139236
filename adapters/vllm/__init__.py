"""The vLLM family: ``vllm:`` (a managed or remote server) and ``vllm-offline:`` (an in-process engine in a worker), the model presets and the chat templates they ship, and the ``serve`` command."""
