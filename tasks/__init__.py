"""Built-in tasks (installed as ``medmim_eval.tasks``)."""
