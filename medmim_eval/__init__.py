"""medmim-eval: an evaluation harness for medical multi-image vision-language models."""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
