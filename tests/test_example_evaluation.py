"""A study evaluation is a new file plus its registration line (tests/example_evaluation.py): `mpinet study
--evaluations` offers it, its cells record their own settings and are reused, and its results, verdicts and plot
sit beside the probe's; nothing in mpinet_hub names it."""

import importlib
import json
import sys

import pytest
import yaml

from mpinet_hub.downstream.study import EVALUATIONS, run_study

from .test_study import _settings


@pytest.fixture
def example_evaluation():
    """Registered for the test only: the registry is global."""
    module = importlib.import_module("tests.example_evaluation")
    yield module
    EVALUATIONS.pop("probe-c5", None)
    sys.modules.pop("tests.example_evaluation", None)


def test_a_registered_evaluation_is_a_study_choice_with_cells_verdicts_and_a_plot(example_evaluation, tree_folder,
                                                                                  tmp_path, capsys):
    from mpinet_hub.cli import main

    with pytest.raises(SystemExit):
        main(["study", "--help"])
    assert "probe-c5" in capsys.readouterr().out
    settings = _settings(tree_folder, tmp_path / "study", methods=[], controls=["random", "random-bn"], seeds=[0, 1],
                         evaluations=["probe", "probe-c5"])
    results = run_study(settings)
    assert set(results["cells"]) == {"probe", "probe-c5"}
    assert set(results["cells"]["probe-c5"]) == {"random", "random-bn"}  # a probe: random-bn applies
    cell = tmp_path / "study" / "probe-c5-val" / "random" / "f1-s0-sub0"
    assert yaml.safe_load((cell / "config.yaml").read_text())["levels"] == ["C5"]
    c5 = [c["value"] for c in results["cells"]["probe-c5"]["random"]["1"]]
    all_levels = [c["value"] for c in results["cells"]["probe"]["random"]["1"]]
    assert c5 != all_levels  # another evaluation, not the probe filed twice
    assert {(v["evaluation"], v["a"], v["b"]) for v in results["verdicts"]} >= {("probe-c5", "random", "random-bn")}
    assert (tmp_path / "study" / "study-val-probe-c5.png").stat().st_size > 1000
    assert "probe-c5" in (tmp_path / "study" / "results-val.md").read_text()
    metrics = json.loads((cell / "metrics.json").read_text())
    cell_mtime = (cell / "metrics.json").stat().st_mtime_ns
    again = run_study(settings)  # every cell reused
    assert again["cells"] == results["cells"] and (cell / "metrics.json").stat().st_mtime_ns == cell_mtime
    assert json.loads((cell / "metrics.json").read_text()) == metrics
