"""The whole graph on three small domains: weights -> models -> evaluation -> MLflow -> comparison."""

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import current, write_domain, write_registry



@pytest.mark.slow
def test_run_everything_trains_evaluates_logs_and_compares(project: Path, capsys: pytest.CaptureFixture) -> None:
    from chameleon_assets.defs.models.assets import base_model
    from chameleon_assets.runner import converge, get_instance, load_defs, materialize, run_everything

    for d in ("alpha", "beta", "gamma"):
        write_domain(project / "raw", d)
    write_registry(project, ["alpha", "beta", "gamma"])
    run_everything()
    printed = capsys.readouterr().out
    assert "Mixture comparison" in printed and "chameleon_pretrain" in printed

    table = pd.read_csv(current(project, "comparison") / "mixture_comparison.csv", index_col=0)
    assert list(table.index) == ["uniform", "chameleon_pretrain"]
    assert {"w.alpha", "bpb.alpha", "ppl.alpha", "ppl.gamma", "ppl_avg_arith", "bpb_avg", "nll_avg",
            "d_bpb_avg", "acc.arc_easy_local", "acc.arc_easy_local_se"} <= set(table.columns)
    assert (table["ppl_avg_arith"] > 1).all() and (table["seeds"] == 1).all()
    assert table.loc["uniform", "w.alpha"] == pytest.approx(1 / 3)
    assert table["bpb_avg_lo"].isna().all()  # one seed: no interval, nothing significant
    assert table.loc["chameleon_pretrain", "d_bpb_avg_sig"] == 0

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["chameleon"], filter_string="tags.asset_partition = 'uniform|0'")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.mixture"] == "uniform"
    assert float(run["params.weight.beta"]) == pytest.approx(1 / 3, abs=1e-6)
    assert run["params.token_budget"] == "4096" and run["params.seed"] == "0"
    assert run["tags.dagster_run_id"] and len(run["tags.data_version.gamma"]) == 24 and run["tags.proxy_versions"]
    assert run["tags.model_version"] == current(project, "base_model", "uniform/seed-0").name
    for metric in ("metrics.train_loss", "metrics.tokens_per_s", "metrics.ppl.alpha", "metrics.ppl_avg",
                   "metrics.bpb_avg", "metrics.nll_avg", "metrics.acc.arc_easy_local",
                   "metrics.acc_stderr.arc_easy_local"):
        assert run[metric] == run[metric], metric  # present, not NaN
    history = mlflow.tracking.MlflowClient().get_metric_history(run["run_id"], "train_loss")
    assert [m.step for m in history] == list(range(1, 33))
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run["run_id"])}
    assert {"weights.csv", "affinity_heatmap.png", "README.md"} <= artifacts
    # The runs table's Dataset column: each domain's train split as trained on, its held-out
    # split as evaluated on, named by domain, digested by the corpus version the model tags carry.
    inputs = mlflow.tracking.MlflowClient().get_run(run["run_id"]).inputs.dataset_inputs
    seen = {(i.dataset.name, i.dataset.digest, str(Path(json.loads(i.dataset.source)["uri"]).resolve()),
             {t.key: t.value for t in i.tags}["mlflow.data.context"]) for i in inputs}
    assert seen == {(name.format(d), run[f"tags.data_version.{d}"], str(current(project, "corpus", d) / split), context)
                    for d in ("alpha", "beta", "gamma")
                    for name, split, context in (("{}", "train.bin", "training"), ("{}/val", "val.bin", "evaluation"))}

    # Re-materialising an unchanged partition reuses its version: no retraining, no new run.
    result = materialize(load_defs(), get_instance(), [base_model], partition_key="uniform|0")
    (mat,) = result.asset_materializations_for_node("base_model")
    assert mat.metadata["reused_existing_version"].value is True
    runs = mlflow.search_runs(experiment_names=["chameleon"], filter_string="tags.asset_partition = 'uniform|0'")
    assert len(runs) == 1

    # A second seed trains and evaluates only the new (mixture, seed) partitions.
    profile = project / "conf" / "profiles" / "tiny.yaml"
    profile.write_text(profile.read_text().replace("seed: 0\n", "seed: 0\nseeds: [0, 1]\n"))
    report = converge("run")
    assert sorted(report.materialized) == ["base_model[chameleon_pretrain|1]", "base_model[uniform|1]",
                                           "evaluation[chameleon_pretrain|1]", "evaluation[uniform|1]",
                                           "mixture_comparison"]
    assert "seed" in report.partition_changes
    table = pd.read_csv(current(project, "comparison") / "mixture_comparison.csv", index_col=0)
    assert (table["seeds"] == 2).all()
    assert (table["bpb_avg_lo"] < table["bpb_avg"]).all() and (table["bpb_avg"] < table["bpb_avg_hi"]).all()

    # MLflow: one run per (mixture, seed), nested under one parent per mixture holding the aggregates.
    client = mlflow.tracking.MlflowClient()
    seeds = mlflow.search_runs(experiment_names=["chameleon"], filter_string="params.mixture = 'uniform'")
    assert sorted(seeds["params.seed"]) == ["0", "1"]
    (parent_id,) = set(seeds["tags.mlflow.parentRunId"])
    parent = client.get_run(parent_id)
    assert parent.data.tags["kind"] == "mixture" and parent.data.tags["mixture"] == "uniform"
    assert parent.data.metrics["seeds"] == 2 and parent.data.metrics["bpb_avg"] == pytest.approx(
        table.loc["uniform", "bpb_avg"], rel=1e-5)

    # Removing the seed again drops its rows (its models stay on disk, reused if it comes back).
    profile.write_text(profile.read_text().replace("seeds: [0, 1]\n", "seeds: [0]\n"))
    report = converge("run")
    assert report.materialized == ["mixture_comparison"] and "-seed: 1" in report.partition_changes
    table = pd.read_csv(current(project, "comparison") / "mixture_comparison.csv", index_col=0)
    assert (table["seeds"] == 1).all()


def test_mlflow_artifacts_stay_under_the_data_directory(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chameleon_assets.defs.tracking import MLflowTracking

    monkeypatch.chdir(project)  # MLflow's default would be ./mlruns here
    tracking = MLflowTracking()
    with tracking.start_run(run_name="probe") as run:
        mlflow.log_text("hello", "probe.txt")
    assert run.info.artifact_uri.startswith((project / "data" / "mlflow" / "artifacts").as_uri())
    assert not (project / "mlruns").exists()
    # rglob returns a generator, truthy even when nothing matches: collect what it finds
    probes = list((project / "data/mlflow/artifacts").rglob("probe.txt"))
    assert any(probes), "probe.txt is not under data/mlflow/artifacts"
    assert [p.read_text() for p in probes] == ["hello"]


def test_a_models_domains_are_its_mlflow_dataset_inputs_once_per_context(project: Path) -> None:
    from chameleon_assets.core.corpus import CorpusShards
    from chameleon_assets.defs.tracking import log_domain_inputs

    shards = [CorpusShards(domain=d, directory=str(project / "corpus" / d / version), dtype="uint16", vocab_size=8192,
                           train_tokens=100, val_tokens=10, train_documents=9, val_documents=1, text_bytes=400,
                           val_text_bytes=40, data_version=version)
              for d, version in (("alpha", "a" * 24), ("beta", "b" * 24))]
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    # An experiment of this store's own: the process may hold another test's active experiment.
    experiment = mlflow.create_experiment("inputs")
    with mlflow.start_run(experiment_id=experiment) as run:
        log_domain_inputs(shards, "training")
    with mlflow.start_run(run_id=run.info.run_id):  # the evaluation reopens the model's run
        log_domain_inputs(shards, "evaluation")
        log_domain_inputs(shards[:1], "training")  # logged again: still listed once
    inputs = mlflow.tracking.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    seen = sorted((i.dataset.name, i.dataset.digest, json.loads(i.dataset.source)["uri"], i.dataset.source_type,
                   [(t.key, t.value) for t in i.tags]) for i in inputs)
    root = project / "corpus"
    assert seen == [
        ("alpha", "a" * 24, f"{root}/alpha/{'a' * 24}/train.bin", "local", [("mlflow.data.context", "training")]),
        ("alpha/val", "a" * 24, f"{root}/alpha/{'a' * 24}/val.bin", "local", [("mlflow.data.context", "evaluation")]),
        ("beta", "b" * 24, f"{root}/beta/{'b' * 24}/train.bin", "local", [("mlflow.data.context", "training")]),
        ("beta/val", "b" * 24, f"{root}/beta/{'b' * 24}/val.bin", "local", [("mlflow.data.context", "evaluation")]),
    ]
