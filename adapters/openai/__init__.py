"""The OpenAI-compatible chat adapter (``openai:``): options and registration, the client, image payloads."""
