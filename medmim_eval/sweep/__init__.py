"""Sweeps: (model, task) cells, each an ordinary run directory, spread over Ray, Slurm or local processes."""
