"""Meta-training with stable-baselines3 PPO: the trainer, its configuration schema, callbacks,
checkpoints and plots. ``python -m rlhpo.train`` is the entry point."""
