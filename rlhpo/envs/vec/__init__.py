"""Vector environments: restarting subprocess workers, the batched (vmap) env, and Ray actors."""
