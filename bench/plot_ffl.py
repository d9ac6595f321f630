"""The focal frequency loss through a run: `ffl` as measured and `w_ffl * ffl` as it enters the total, beside the
instance loss, for one or more `mpinet pretrain` runs (what `w_ffl: auto` calibrates on, and what it then does).

    python bench/plot_ffl.py runs/study-landsat/pretrain/mpinet-s0 runs/ffl-log-landsat-s0 \\
        --labels "ffl_head_loss raw" "ffl_head_loss log (the default since 2026-12-02)" --out docs/ffl_calibration.png

Until the weight is fixed, `w_ffl` is logged as 0: the FFL heads train alone on detached C5 and add nothing to
the total; the dotted line marks the step the weight was fixed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="mpinet pretraining run folders (log.jsonl)")
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: the run's folder)")
    p.add_argument("--out", type=Path, default=Path("ffl_calibration.png"), help="(default: %(default)s)")
    a = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (raw, weighted) = plt.subplots(1, 2, figsize=(11, 4))
    for i, run in enumerate(a.runs):
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
        steps = [r["step"] for r in rows]
        label = a.labels[i] if a.labels else str(run)
        colour = f"C{i}"
        raw.plot(steps, [r["ffl"] for r in rows], color=colour, lw=1, label=label)
        weighted.plot(steps, [r["w_ffl"] * r["ffl"] for r in rows], color=colour, lw=1.2,
                      label=f"{label}: w_ffl x ffl (w_ffl {rows[-1]['w_ffl']:.0f})")
        weighted.plot(steps, [0.5 * r["ins"] for r in rows], color=colour, lw=0.8, ls="--", alpha=0.6)
        fixed = next((r["step"] for r in rows if r["w_ffl"] > 0), None)
        if fixed is not None:
            for ax in (raw, weighted):
                ax.axvline(fixed, color=colour, ls=":", lw=0.8)
    raw.set_title("ffl as measured (heads train alone until the dotted line)", fontsize=10)
    raw.set_xlabel("step")
    raw.set_ylabel("L_ffl")
    weighted.set_title("in the total: w_ffl x ffl (solid) against 0.5 x ins (dashed)", fontsize=10)
    weighted.set_xlabel("step")
    weighted.set_ylabel("loss")
    for ax in (raw, weighted):
        ax.grid(alpha=0.3)
    raw.legend(fontsize=7)
    weighted.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=100)
    print("written:", a.out)


if __name__ == "__main__":
    main()
