# Hydra configs of python -m rlhpo.apply (separate from train's groups: 'policy' here is a path)
