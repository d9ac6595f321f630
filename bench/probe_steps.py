"""How many steps (and what learning rate) the study's probe needs, chosen on val over the study's own encoders.

For every encoder of a finished study (its pretraining cells and controls), seed and subset seed, one probe per
learning rate is trained to the last of its milestones and evaluated on the study's split (val) at each milestone,
with the study's cell settings otherwise. The training loss of the 20 steps before each milestone shows whether the
head still learns. Resumable: a stopped sweep continues its probes from their checkpoints, and milestones already in
OUT/results.jsonl are not evaluated again.

    OMP_NUM_THREADS=1 python bench/probe_steps.py --study STUDY --out SWEEP
    python bench/probe_steps.py --study ... --out ... --report      # the tables from results.jsonl only
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from mpinet_hub.downstream.paired import paired_verdict
from mpinet_hub.downstream.probe import ProbeConfig, Prober
from mpinet_hub.downstream.study import nested_settings
from mpinet_hub.training import resume_or_start


class MilestoneProber(Prober):
    """A probe that calls `on_milestone(prober)` at the steps in `milestones` (set on the instance)."""

    milestones: tuple[int, ...] = ()
    on_milestone = None

    def checkpoint(self, final: bool) -> None:
        super().checkpoint(final)
        if self.step in self.milestones and self.on_milestone is not None:
            self.on_milestone(self)


def train_loss(log: Path, step: int, span: int = 20) -> float:
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return statistics.fmean(r["ce"] for r in rows if step - span < r["step"] <= step)


def metric_of(metrics: dict, metric: str) -> float:
    return metrics["per_class"][metric[4:]]["IoU"] if metric.startswith("IoU:") else metrics[metric]


def sweep(study: Path, out: Path, runs: dict[float, list[int]], seeds: list[int], subset_seeds: list[int]) -> None:
    s = nested_settings(json.loads((study / "study.json").read_text())["settings"])
    encoders = {m: str(study / "pretrain" / f"{m.replace(':', '+')}-s{{seed}}") for m in s["methods"]}
    encoders |= {c: c for c in s["controls"]}
    results = out / "results.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    done = {(r["encoder"], r["seed"], r["subset_seed"], r["lr"], r["step"])
            for r in map(json.loads, results.read_text().splitlines())} if results.is_file() else set()
    for lr, milestones in runs.items():
        for name, spec in encoders.items():
            for seed in seeds:
                for sub in subset_seeds:
                    key = (name, seed, sub, lr)
                    if all((*key, m) in done for m in milestones):
                        continue
                    cell = out / "runs" / f"lr{lr:g}-to{max(milestones)}" / name / f"s{seed}-sub{sub}"
                    cfg = ProbeConfig(spec.format(seed=seed), s["dataset"], s["data_root"], str(cell),
                                      label_fraction=s["fractions"][0], steps=max(milestones), lr=lr,
                                      patch=s["label_patch"], seed=seed, subset_seed=sub, split=s["split"],
                                      arch=s["arch"], window=s["probe"]["window"], device=s["device"],
                                      value_max=s["value_max"], reestimate_bn=s["reestimate_bn"], mean=s["mean"],
                                      std=s["std"], save_every=math.gcd(*milestones))  # read at checkpoints

                    def record(prober: Prober, key=key) -> None:
                        if (*key, prober.step) in done:
                            return
                        metrics = prober.evaluate(prober.out / f"at-{prober.step}")
                        row = {"encoder": key[0], "seed": key[1], "subset_seed": key[2], "lr": key[3],
                               "step": prober.step, "metric": metric_of(metrics, s["metric"]),
                               "train_loss": train_loss(prober.out / "log.jsonl", prober.step)}
                        with results.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        done.add((*key, prober.step))

                    prober = resume_or_start(MilestoneProber, cfg)
                    prober.milestones, prober.on_milestone = tuple(milestones), record
                    if prober.step < cfg.steps:
                        prober.run()
    report(study, out)


def report(study: Path, out: Path) -> None:
    metric = json.loads((study / "study.json").read_text())["settings"]["metric"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    settings = sorted({(r["lr"], r["step"]) for r in rows})
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    value = {(r["encoder"], r["seed"], r["subset_seed"], r["lr"], r["step"]): r for r in rows}
    pairs = sorted({(r["seed"], r["subset_seed"]) for r in rows})
    lines = [f"{metric} (%) on {study.name}'s split, mean over {len(pairs)} (seed, subset seed) pairs; "
             "train loss of the 20 steps before the milestone in brackets", "",
             "| encoder | " + " | ".join(f"lr {lr:g}, {step} steps" for lr, step in settings) + " |",
             "|---|" + "---|" * len(settings)]
    for name in encoders:
        cells = []
        for lr, step in settings:
            got = [value[(name, *p, lr, step)] for p in pairs if (name, *p, lr, step) in value]
            cells.append(f"{statistics.fmean(r['metric'] for r in got):.1f} "
                         f"({statistics.fmean(r['train_loss'] for r in got):.3f})" if got else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    complete = [(lr, step) for lr, step in settings
                if all((e, *p, lr, step) in value for e in encoders for p in pairs)]
    lines += ["", "Paired over seeds (the cells of a seed averaged: every encoder's gain over lr 0.001 at 300 steps, "
              "the default; MPINet - random-bn at each setting), 95% t intervals:", "",
              "| setting | gain over the default, all encoders | mpinet - random-bn |", "|---|---|---|"]

    def interval(a: list[float], b: list[float], seeds: list[int]) -> str:
        if not a:
            return "-"
        v = paired_verdict(a, b, seeds)
        return "-" if v["low"] is None else f"{v['mean_diff']:+.1f} [{v['low']:+.1f}, {v['high']:+.1f}]"

    for lr, step in complete:
        cells = [(e, *p) for e in encoders for p in pairs if (e, *p, 0.001, 300) in value]
        gain = interval([value[(*c, lr, step)]["metric"] for c in cells],
                        [value[(*c, 0.001, 300)]["metric"] for c in cells], [c[1] for c in cells])
        gap = "-"
        if {"mpinet", "random-bn"} <= set(encoders):
            gap = interval([value[("mpinet", *p, lr, step)]["metric"] for p in pairs],
                           [value[("random-bn", *p, lr, step)]["metric"] for p in pairs], [p[0] for p in pairs])
        lines.append(f"| lr {lr:g}, {step} steps | {gain} | {gap} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, required=True, help="a finished study folder (its study.json, pretrain/)")
    parser.add_argument("--out", type=Path, required=True, help="the sweep's folder")
    parser.add_argument("--runs", nargs="+", default=["0.001:300,1000,3000", "0.01:300,1000"],
                        help="LR:MILESTONE,... one probe per learning rate, evaluated at each milestone "
                             "(default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(default: %(default)s)")
    parser.add_argument("--subset-seeds", type=int, nargs="+", default=[0], help="(default: %(default)s)")
    parser.add_argument("--report", action="store_true", help="only the tables, from OUT/results.jsonl")
    args = parser.parse_args()
    if args.report:
        report(args.study, args.out)
        return
    runs = {float(lr): sorted(int(m) for m in steps.split(",")) for lr, steps in (r.split(":") for r in args.runs)}
    sweep(args.study, args.out, runs, args.seeds, args.subset_seeds)


if __name__ == "__main__":
    main()
