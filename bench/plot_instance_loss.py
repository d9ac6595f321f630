"""The instance loss of pretraining runs against chance, ln(K+1), in one picture.

    python bench/plot_instance_loss.py runs/evidence/pretrain/mocov2-s0 runs/evidence-gpu/pretrain/mocov2-s0 \\
        --out docs/instance_loss.png

Each run folder holds the `log.jsonl` and `config.yaml` that `mpinet pretrain` writes. The y axis is
L_ins - ln(K+1): 0 is a model that cannot tell its positive key from the queue's; below 0 it can. The queue
starts as random keys, which are easy negatives: the first K / (2B) steps, until real keys fill it, are left out.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="pretraining run folders")
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: folder and settings)")
    p.add_argument("--out", type=Path, default=Path("instance_loss.png"), help="(default: %(default)s)")
    p.add_argument("--smooth", type=int, default=20, help="moving-average window in steps (default: %(default)s)")
    a = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, run in enumerate(a.runs):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        chance = math.log(cfg["queue_size"] + 1)
        filled = math.ceil(cfg["queue_size"] / (2 * cfg["batch_size"]))
        kept = [r for r in records if r["step"] > filled]
        steps, gap = [r["step"] for r in kept], [r["ins"] - chance for r in kept]
        w = max(1, min(a.smooth, len(gap) // 5))
        smooth = [sum(gap[max(0, j - w + 1): j + 1]) / len(gap[max(0, j - w + 1): j + 1]) for j in range(len(gap))]
        label = (a.labels[i] if a.labels else
                 f"{run.parent.parent.name}/{run.name}: K {cfg['queue_size']}, batch {cfg['batch_size']}, "
                 f"lr {cfg['lr']}/256")
        ax.plot(steps, smooth, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("instance loss - ln(K+1)  (nats; < 0: learning)")
    ax.set_title(f"Instance loss against chance, once the queue holds real keys ({a.smooth}-step moving average)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(a.out, dpi=100)
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
