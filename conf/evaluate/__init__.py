# Hydra configs of python -m rlhpo.evaluate (its own experiment/ presets)
