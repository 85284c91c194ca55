"""Evaluation: the runner that trains a task under any schedule, the baselines, the searches,
and the jobs, launchers and reports of ``python -m rlhpo.evaluate``."""
