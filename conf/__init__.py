# Hydra configs, shipped in the package as rlhpo.conf
