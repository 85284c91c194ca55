"""The control decision: features, actions, and the one decision path (interval clock,
divergence rule, observe -> act -> apply, hyperparameter writes) that the environment, the
Controller and the evaluation runner share."""
