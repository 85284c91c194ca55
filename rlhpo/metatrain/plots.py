"""Plot a meta-training run from its TensorBoard logs (the figure in docs/meta-training.md).

    python -m rlhpo.metatrain.plots <run dir> [--out docs/meta_training.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

PANELS = (
    ("rollout/ep_rew_mean", "meta-training return\n(the episode's reward summed)"),
    ("eval/log_improvement_vs_default", "held-out: log(default / controller\nfinal val loss), > 0 is better"),
    ("train/value_loss", "PPO value loss"),
    ("throughput/env_steps_per_s", "env steps per second"),
)


def read_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for run in sorted(tb_dir.glob("ppo_*")):
        ea = EventAccumulator(str(run))
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in ea.Scalars(tag))
    return {k: sorted(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/meta_training.png"))
    args = p.parse_args(argv)
    scalars = read_scalars(args.run_dir / "tb")
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (tag, title) in zip(axes.flat, PANELS):
        pts = scalars.get(tag, [])
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o" if len(pts) < 30 else None)
        if tag.startswith("eval/"):
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    fig.suptitle(f"rlhpo meta-training: {args.run_dir.name}")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
