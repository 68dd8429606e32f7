"""Training: data sources, optimizers, the loop, checkpoints and metrics."""
