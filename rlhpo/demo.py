"""A short demonstration episode: one held-out task, a fixed and a random policy, printed step by step.

    python -m rlhpo.demo [--family digits_cnn] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

import rlhpo


def run(policy: str, family: str, seed: int) -> None:
    env = rlhpo.make_env(families=[family], n_intervals=10)
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    print(f"\n== {policy} policy on {info['task']} ({env.task.optimizer}, budget {info['budget']} examples)")
    print(f"{'examples':>9} {'lr':>9} {'batch':>6} {'wd':>9} {'train':>8} {'val':>8} {info['metric_name']:>10} {'reward':>7}")
    total, last, empty = 0.0, None, 0
    while True:
        action = np.zeros(env.action_space.shape, np.float32) if policy == "fixed" else env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        if info["examples"] == last:  # the batch was larger than the interval: it trained nothing
            empty += 1
        else:
            print(
                f"{info['examples']:9d} {info['lr']:9.2e} {info['batch_size']:6d} {info['weight_decay']:9.2e} "
                f"{info['train_loss']:8.4f} {info['val_loss']:8.4f} {info['val_metric']:10.4f} {reward:+7.3f}"
            )
        last = info["examples"]
        if terminated or truncated:
            note = f"  ({empty} interval(s) trained no example and are not shown)" if empty else ""
            print(f"return {total:+.3f}{'  (diverged)' if info['diverged'] else ''}{note}")
            return


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="digits_cnn")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print("train/val: losses on the training and validation splits after each interval (the policy reads")
    print("both); the held-out test split is for final comparisons only: python -m rlhpo.apply compare=true")
    for policy in ("fixed", "random"):
        run(policy, args.family, args.seed)


if __name__ == "__main__":
    main()
