"""Built-in model adapters (installed as ``medmim_eval.adapters``)."""
