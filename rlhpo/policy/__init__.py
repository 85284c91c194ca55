"""A meta-trained policy: the artifact on disk (weights, observation normalisation, spec) and the
driver that turns observations into actions."""
