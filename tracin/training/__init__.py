"""Training: data sets, model factories, losses, the trainer and the one checkpoint format."""
