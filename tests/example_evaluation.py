"""A study evaluation written as a user would add one: this file and its registration line, nothing changed in
mpinet_hub. The linear probe on C5 alone (what the deepest level holds, the level an image-level objective
shapes most), scored beside the default probe on C2-C5: `mpinet study --evaluations probe probe-c5`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mpinet_hub.downstream.probe import ProbeConfig, run_probe
from mpinet_hub.downstream.study import EVALUATIONS, Evaluation, StudySettings, register_evaluation


def c5_probe(s: StudySettings, spec: str, fraction: float, seed: int, subset_seed: int, cell: Path) -> ProbeConfig:
    return dataclasses.replace(EVALUATIONS["probe"].settings(s, spec, fraction, seed, subset_seed, cell), levels=["C5"])


register_evaluation("probe-c5", Evaluation(c5_probe, "config.yaml", lambda cfg, s, cell: run_probe(cfg)))
