"""Training loop, evaluation, metrics, checkpoints and distributed helpers."""
