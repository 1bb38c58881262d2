"""Olmix and its mixture reuse as assets: a fit on RegMix's swarm, and a reduced swarm after domains change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import current, write_domain, write_registry

# The tiny profile without few-shot tasks: a 6-run swarm (the fewest a law over 3 domains
# and its leave-one-out check need), 5 reduced runs for reuse (2 coordinates after one
# domain is added), and a repetition limit the tiny domains never reach.
METHODS = """
methods:
  regmix:
    runs: 6
    model: {arch: llama, hidden_size: 16, num_layers: 1, num_heads: 2, intermediate_size: 32, context_length: 32}
    train: {tokens: 1024, batch_size: 4, lr: 1.0e-2, warmup_steps: 2, checkpoint_every: 100}
    val_windows: 2
    candidates: 2000
    top_k: 10
  olmix: {reuse_runs: 5, max_repetition: 100.0}
"""


@pytest.fixture
def olmix_project(project: Path) -> Path:
    profile = project / "conf" / "profiles" / "tiny.yaml"
    profile.write_text(profile.read_text().replace("tasks: [arc_easy_local]", "tasks: []") + METHODS)
    for d in ("alpha", "beta", "gamma", "delta"):
        write_domain(project / "raw", d)
    write_registry(project, ["alpha", "beta", "gamma"])
    return project


def _weights(project: Path, method: str) -> dict:
    return json.loads((current(project, f"methods/{method}") / "weights.json").read_text())


def _run_costs(project: Path, swarm: str) -> float:
    """The FLOPs of every current run of a swarm, read from each run's own record."""
    runs = sorted((project / "data" / "artifacts" / "methods" / swarm).glob("run-*"))
    return sum(json.loads((r / "current" / "run.json").read_text())["cost"]["flops"] for r in runs)


@pytest.mark.slow
def test_olmix_is_a_mixture_and_reuse_after_adding_a_domain_runs_only_the_reduced_swarm(olmix_project: Path) -> None:
    from chameleon_assets.runner import converge

    project = olmix_project
    report = converge("run", mixtures=["uniform", "olmix"])
    assert not report.failed, report.failed
    done = set(report.materialized)
    assert {"olmix_weights", "mixture_table", "base_model[olmix|0]", "evaluation[olmix|0]"} <= done
    assert {f"regmix_run[{r}]" for r in range(6)} <= done
    assert "regmix_weights" not in done and not any(a.startswith("olmix_reuse") for a in done)

    olmix = _weights(project, "olmix")
    assert olmix["domains"] == ["alpha", "beta", "gamma"] and abs(sum(olmix["weights"]) - 1) < 1e-9
    assert olmix["details"]["runs"] == 6 and olmix["details"]["folds"] == 6  # leave one out
    assert olmix["details"]["held_out_mae"] > 0 and "rank_correlation" in olmix["details"]
    # Its cost is the swarm's: the six runs it fitted, each trained and scored once.
    assert olmix["cost"]["flops"] == pytest.approx(_run_costs(project, "regmix_swarm"), rel=1e-12)
    table = json.loads((current(project, "mixture_table") / "weights.json").read_text())
    assert table["weights"]["olmix"] == pytest.approx(olmix["weights"], abs=1e-12)
    assert table["sources"]["olmix"].startswith("olmix_weights ")

    # A fourth domain: reuse trains its 5 reduced runs and fits them; no RegMix run and no
    # full Olmix fit is redone.
    write_registry(project, ["alpha", "beta", "gamma", "delta"])
    assert not converge("sync").failed
    report = converge("run", mixtures=["olmix_reuse"])
    assert not report.failed, report.failed
    done = set(report.materialized)
    assert {f"olmix_reuse_run[{r}]" for r in range(5)} | {"olmix_reuse_weights", "base_model[olmix_reuse|0]"} <= done
    assert not any(a.startswith(("regmix_run", "olmix_weights")) for a in done), sorted(done)

    previous = np.array(olmix["weights"])
    reuse = _weights(project, "olmix_reuse")
    assert reuse["domains"] == ["alpha", "beta", "delta", "gamma"]
    w = dict(zip(reuse["domains"], reuse["weights"]))
    kept = np.array([w["alpha"], w["beta"], w["gamma"]])
    # The frozen ratios, exactly: only the unaffected block's share and delta's were searched.
    assert kept / kept.sum() == pytest.approx(previous / previous.sum(), abs=1e-12)
    assert reuse["details"]["affected"] == ["delta"] and reuse["details"]["runs"] == 5
    assert abs(sum(reuse["weights"]) - 1) < 1e-9
    # Every reduced run trained on a mixture with the same frozen ratios.
    for r in range(5):
        run = json.loads((current(project, f"methods/olmix_reuse_swarm/run-{r}") / "run.json").read_text())
        m = dict(zip(run["domains"], run["mixture"]))
        block = np.array([m["alpha"], m["beta"], m["gamma"]])
        assert block / block.sum() == pytest.approx(previous / previous.sum(), abs=1e-12)
    assert reuse["cost"]["flops"] == pytest.approx(_run_costs(project, "olmix_reuse_swarm"), rel=1e-12)
    assert 0 < reuse["cost"]["flops"] < olmix["cost"]["flops"]

    # Removing a domain (beta; delta was never in the olmix proposal, so only alpha and
    # gamma remain of it): the previous ratios over what remains, no run trained.
    write_registry(project, ["alpha", "gamma"])
    assert not converge("sync").failed
    report = converge("run", mixtures=["olmix_reuse"])
    assert not report.failed, report.failed
    removed = _weights(project, "olmix_reuse")
    assert removed["details"]["affected"] == [] and removed["details"]["removed"] == ["beta"]
    assert removed["cost"]["flops"] == 0
    assert removed["weights"] == pytest.approx([previous[0] / (previous[0] + previous[2]),
                                                previous[2] / (previous[0] + previous[2])], abs=1e-12)
