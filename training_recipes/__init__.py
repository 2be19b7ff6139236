"""Fine-tuning recipes (installed as ``medmim_eval.training_recipes``)."""
