"""Prompt templates (``*.md``, ``string.Template`` syntax) and answer schemas (``*.schema.json``) for LLM question generation."""
