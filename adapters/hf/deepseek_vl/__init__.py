"""DeepSeek-VL in-process (``hf-deepseek-vl``): options and registration, the adapter (native and package routes), the prompt, the deepseek_vl package route."""
