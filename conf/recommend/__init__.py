# Hydra config of python -m rlhpo.recommend (the warm start's recommendation for one task)
