"""Med-Flamingo-9B in-process (``med-flamingo``): registration, where its parts are (parts.py), the prompt, the adapter."""
