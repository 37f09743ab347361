"""Training machinery: the emotion Brain (DDP, checkpoints, logs, evaluation under attack), checkpoints, DDP helpers."""
