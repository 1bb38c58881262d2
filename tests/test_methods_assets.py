"""DoReMi, DoGE and RegMix as assets: first-class mixtures, honest data dependencies, measured cost."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import current, write_domain, write_registry

# The tiny profile without few-shot tasks, with method budgets of a few seconds.
METHODS = """
methods:
  doremi: {eta: 1.0, smoothing: 0.001}
  doge: {smoothing: 0.001}
  regmix:
    runs: 4
    model: {arch: llama, hidden_size: 16, num_layers: 1, num_heads: 2, intermediate_size: 32, context_length: 32}
    train: {tokens: 1024, batch_size: 4, lr: 1.0e-2, warmup_steps: 2, checkpoint_every: 100}
    val_windows: 2
    candidates: 2000
    top_k: 10
"""


@pytest.fixture
def methods_project(project: Path) -> Path:
    profile = project / "conf" / "profiles" / "tiny.yaml"
    text = profile.read_text().replace("tasks: [arc_easy_local]", "tasks: []")
    profile.write_text(text + METHODS)
    for d in ("alpha", "beta", "gamma", "delta"):
        write_domain(project / "raw", d)
    write_registry(project, ["alpha", "beta", "gamma"])
    return project


@pytest.mark.slow
def test_computed_methods_are_mixtures_whose_domain_dependencies_are_honest(methods_project: Path) -> None:
    from chameleon_assets.defs import policy
    import dagster as dg

    from chameleon_assets.runner import converge, get_instance, load_defs, materialize

    project = methods_project
    report = converge("run", mixtures=["uniform", "doremi", "doge", "regmix"])
    assert not report.failed, report.failed
    done = set(report.materialized)
    assert {"doremi_weights", "doge_weights", "regmix_weights", "mixture_table", "base_model[doremi|0]",
            "base_model[doge|0]", "base_model[regmix|0]", "evaluation[regmix|0]", "mixture_comparison"} <= done
    assert {f"regmix_run[{r}]" for r in range(4)} <= done

    # Each computed method is a row of the table base models train on, with its cost.
    table = json.loads((current(project, "mixture_table") / "weights.json").read_text())
    for method in ("doremi", "doge", "regmix"):
        w = table["weights"][method]
        assert len(w) == 3 and abs(sum(w) - 1) < 1e-9 and min(w) >= 0
        assert table["costs"][method]["flops"] > 0 and table["costs"][method]["wall_s"] > 0
        assert table["sources"][method].startswith(f"{method}_weights ")
    # DoReMi trains a reference and a proxy of the proxy's size and budget: more than CHAMELEON's one proxy.
    assert table["costs"]["doremi"]["flops"] > table["costs"]["chameleon_pretrain"]["flops"] > 0
    assert set(table["costs"]["doremi"]["parts"]) >= {"reference", "proxy"}
    assert table["costs"]["uniform"]["flops"] == 0
    comparison = pd.read_csv(current(project, "comparison") / "mixture_comparison.csv", index_col=0)
    assert {"uniform", "doremi", "doge", "regmix"} <= set(comparison.index)
    regmix = json.loads((current(project, "methods/regmix") / "weights.json").read_text())
    assert "rank_correlation" in regmix["details"]

    # MLflow: the weight trajectory over steps, the cost, and the base model tagged with its source.
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["chameleon"], filter_string="tags.method = 'doremi'")
    assert len(runs) == 1 and runs.iloc[0]["metrics.cost_flops.doremi"] > 0
    history = mlflow.tracking.MlflowClient().get_metric_history(runs.iloc[0]["run_id"], "weight.alpha")
    assert len(history) == 32  # one point per proxy step: 4096 tokens / (4 x 32)
    model_run = mlflow.search_runs(experiment_names=["chameleon"], filter_string="tags.asset_partition = 'doge|0'")
    assert model_run.iloc[0]["tags.weights_source"].startswith("doge_weights ")
    assert model_run.iloc[0]["metrics.weights_cost_flops"] > 0

    # Adding a domain: CHAMELEON needs only the new domain's corpus and embedding; the
    # computed methods are stale (they must rerun) and leave the table until they do.
    write_registry(project, ["alpha", "beta", "gamma", "delta"])
    report = converge("sync")
    assert not report.failed, report.failed
    assert sorted(report.materialized) == ["affinity_matrix", "domain_corpus[delta]", "domain_embeddings[delta]",
                                           "mixture_comparison", "mixture_table", "mixture_weights",
                                           "weight_diagnostics"]
    stale = {k for k, _ in policy.stale_partitions(load_defs(), get_instance())}
    assert {"doremi_weights", "doge_weights", "regmix_run", "regmix_weights"} <= stale
    assert "proxy_model" not in stale
    table = json.loads((current(project, "mixture_table") / "weights.json").read_text())
    assert set(table["weights"]) >= {"uniform", "chameleon_pretrain"} and "doremi" not in table["weights"]
    assert "other domain data" in table["skipped"]["doremi"]
    assert len(table["weights"]["chameleon_pretrain"]) == 4

    # Rerunning DoReMi (what `chameleon run --mixtures doremi` requests first) puts it back, on four domains.
    assert [(k.to_user_string(), p) for k, p in policy.requested(
        dg.Definitions(assets=policy.with_requests(load_defs().assets, "run"), resources=load_defs().resources),
        get_instance(), ["doremi"]) if k.to_user_string() in policy.method_assets()] == [("doremi_weights", None)]
    materialize(load_defs(), get_instance(), [dg.AssetKey("doremi_weights"), dg.AssetKey("mixture_table")])
    table = json.loads((current(project, "mixture_table") / "weights.json").read_text())
    assert len(table["weights"]["doremi"]) == 4 and "doremi" not in table["skipped"]
