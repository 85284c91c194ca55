"""The one training loop (it knows nothing of reinforcement learning), its batch sampler, its
monitor, and the stacked trainer that runs many copies of one task as one batched computation."""
