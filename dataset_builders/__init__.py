"""Builders of Med-MIM data from raw datasets (installed as ``medmim_eval.dataset_builders``)."""
