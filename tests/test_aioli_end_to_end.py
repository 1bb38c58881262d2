"""Aioli as a mixture of the tiny project: trained, evaluated and compared like the others,
its trajectory and cost on record, its settings retraining its own models only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import current, write_domain, write_registry

# Rounds of 8 steps: 3 probes of 1 step each, then 5 steps on the updated mixture. The tiny
# profile trains 4096 / (4 x 32) = 32 steps: rounds open at steps 0, 8, 16 and 24 and
# update after their probes, at steps 3, 11, 19 and 27.
AIOLI = "  aioli: {interval: 8, probe_steps: 1, eta: 0.5, delta: 0.5, eval_windows: 2, prior: uniform}\n"


def _set_aioli(project: Path, settings: str) -> None:
    path = project / "conf" / "mixtures.yaml"
    path.write_text(re.sub(r"  aioli: \{.*\}\n", settings, path.read_text()))


@pytest.mark.slow
def test_chameleon_run_mixtures_aioli_trains_follows_and_compares_it(project: Path) -> None:
    from chameleon_assets.cli import main
    from chameleon_assets.runner import converge

    profile = project / "conf" / "profiles" / "tiny.yaml"
    profile.write_text(profile.read_text().replace("tasks: [arc_easy_local]", "tasks: []"))
    _set_aioli(project, AIOLI)
    for d in ("alpha", "beta", "gamma"):
        write_domain(project / "raw", d)
    write_registry(project, ["alpha", "beta", "gamma"])

    assert main(["run", "--mixtures", "uniform", "aioli"]) == 0
    table = pd.read_csv(current(project, "comparison") / "mixture_comparison.csv", index_col=0)
    assert list(table.index) == ["uniform", "aioli"]
    assert table.loc["aioli", "w.alpha"] == pytest.approx(1 / 3)  # its row: where it started
    assert table.loc["aioli", "d_bpb_avg"] == table.loc["aioli", "d_bpb_avg"]  # paired against uniform

    record = json.loads((current(project, "base_model", "aioli/seed-0") / "training.json").read_text())
    online = record["online"]
    assert online["update_steps"] == [0, 3, 11, 19, 27] and online["rounds"] == 4
    assert len(online["trajectory"]) == 5 and online["trajectory"][0] == pytest.approx([1 / 3] * 3)
    assert online["trajectory"][-1] != online["trajectory"][0]
    # 4 rounds x (3 probes + 1) passes, each over 3 domains x 2 windows x 32 tokens.
    assert online["heldout_passes"] == 16 and online["heldout_tokens"] == 16 * 3 * 2 * 32
    assert online["cost"]["flops"] > 0 and online["cost"]["tokens"] == 3072
    assert (current(project, "base_model", "aioli/seed-0") / "weight_trajectory.png").exists()

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    runs = mlflow.search_runs(experiment_names=["chameleon"], filter_string="tags.asset_partition = 'aioli|0'")
    assert len(runs) == 1
    run = runs.iloc[0]
    history = client.get_metric_history(run["run_id"], "online_weight.beta")
    assert [m.step for m in history] == [0, 3, 11, 19, 27]
    assert [m.value for m in history] == pytest.approx([t[1] for t in online["trajectory"]])
    assert run["metrics.online_cost_flops"] == pytest.approx(online["cost"]["flops"])

    # A new step size retrains the aioli model and no other.
    _set_aioli(project, AIOLI.replace("eta: 0.5", "eta: 0.25"))
    converge("run", mixtures=["uniform", "aioli"])
    for partition, runs in (("uniform|0", 1), ("aioli|0", 2)):
        found = mlflow.search_runs(experiment_names=["chameleon"],
                                   filter_string=f"tags.asset_partition = '{partition}'")
        assert len(found) == runs, partition
