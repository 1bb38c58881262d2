"""The finetuning stage: finetune domains -> finetune_weights -> finetuned_model -> evaluation -> comparison."""

import json
import os
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import current, materialised, new_materialisations, write_domain

PRETRAIN = ["alpha", "beta", "gamma"]
FINETUNE_TEXT = {
    "delta": None,  # conftest's recipe text
    "epsilon": "Patient presented with fever and cough; chest radiograph showed a lobar consolidation.",
    "zeta": "Q: Which planet is closest to the sun? A: Mercury. Q: What gas do plants absorb? A: Carbon dioxide.",
    "eta": "fn main() { let v: Vec<i32> = (1..10).collect(); println!(\"{:?}\", v); }",
}
FINETUNE = ["delta", "epsilon", "zeta"]  # three: with two, KRLS scores are equal by symmetry

# The module's finetuned project is built once (saved_project): its tests share one worker.
pytestmark = pytest.mark.xdist_group("finetune")


def write_both(project: Path, pretrain: list[str], finetune: list[str]) -> Path:
    """A registry with both groups (fixture domains under raw/)."""
    lines = ["domains:"] + [f"  - {{name: {n}, source: {project / 'raw' / n / 'documents.jsonl'}}}" for n in pretrain]
    lines += ["finetune_domains:"] + [f"  - {{name: {n}, source: {project / 'raw' / n / 'documents.jsonl'}}}"
                                      for n in finetune]
    reg = project / "conf" / "domains.yaml"
    reg.write_text("\n".join(lines) + "\n")
    return reg


# --- the weights -----------------------------------------------------------------------


def test_finetune_weights_favour_the_most_distinct_domain(project: Path) -> None:
    """Two near-identical finetuning domains and one distinct: chameleon_finetune gives the
    distinct one the most weight (each twin makes the other look shared)."""
    from chameleon_assets.defs.mixing.weights import _compute_weights
    from chameleon_assets.defs.resources import ChameleonConfig
    from chameleon_assets.defs.values import AffinityMatrix

    rng = np.random.default_rng(0)
    a = rng.normal(size=16)
    means = {"twin1": a, "twin2": a + 0.01 * rng.normal(size=16), "distinct": rng.normal(size=16)}
    domains = list(means)
    kernel = np.array([[means[x] @ means[y] for y in domains] for x in domains])
    heatmap = project / "heatmap.png"
    heatmap.write_bytes(b"png")
    affinity = AffinityMatrix("v", str(project), domains, kernel.tolist(), kernel.tolist(), ["p"], str(heatmap),
                              {d: "c" for d in domains}, {d: 1000 for d in domains})
    table = _compute_weights(ChameleonConfig(), affinity, "ftv", stage="finetune")
    assert list(table.weights) == ["uniform", "natural", "chameleon_finetune"]  # conf's finetune_mixtures
    w = dict(zip(domains, table.weights["chameleon_finetune"]))
    assert w["distinct"] > 0.5 > w["twin1"] + w["twin2"]
    assert abs(w["twin1"] - w["twin2"]) < 0.05
    assert Path(table.path).parent == project / "data" / "artifacts" / "finetune" / "weights"


# --- the whole stage -------------------------------------------------------------------


def _record_starts(monkeypatch: pytest.MonkeyPatch, starts: dict[str, dict[str, torch.Tensor]]) -> None:
    """Record the parameters each finetuning run starts from, as they reach the trainer."""
    from chameleon_assets.core import train

    real = train.train_causal_lm

    def recording(model, sampler, cfg, device, **kwargs):  # noqa: ANN001, ANN003, ANN202
        if kwargs.get("desc", "").startswith("finetune["):
            starts[kwargs["desc"]] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return real(model, sampler, cfg, device, **kwargs)

    monkeypatch.setattr(train, "train_causal_lm", recording)


def build_project(root: Path):  # noqa: ANN201
    """Three pretraining and three finetuning domains, `chameleon run` to the end, once per
    module (``saved_project``); the start parameters and the run's report are kept with it."""
    from chameleon_assets.runner import get_instance, run_everything

    for d in PRETRAIN:
        write_domain(root / "raw", d)
    for d, text in FINETUNE_TEXT.items():
        write_domain(root / "raw", d, text=text)
    write_both(root, PRETRAIN, FINETUNE)
    # This stage's tests need one base model (the start) and no few-shot scores.
    profile = root / "conf" / "profiles" / "tiny.yaml"
    data = yaml.safe_load(profile.read_text())
    data["base_model"]["mixtures"] = ["uniform"]
    data["evaluation"]["tasks"] = []
    profile.write_text(yaml.safe_dump(data))
    starts: dict[str, dict[str, torch.Tensor]] = {}
    instance = get_instance()
    with pytest.MonkeyPatch.context() as mp:
        _record_starts(mp, starts)
        report = run_everything(instance=instance)
    assert not report.failed, report.failed
    torch.save(starts, root / "starts.pt")
    (root / "materialized.json").write_text(json.dumps(list(report.materialized)))
    return instance


@pytest.fixture
def finetuned(restored_project, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    """``(project, instance, starts, materialized)`` of the module's run: ``starts`` holds
    each finetuning run's start parameters (the build's, and any this test trains)."""
    project, instance = restored_project
    starts = torch.load(project / "starts.pt")
    _record_starts(monkeypatch, starts)
    return project, instance, starts, json.loads((project / "materialized.json").read_text())


@pytest.mark.slow
def test_the_finetuning_stage_trains_from_the_base_model_evaluates_compares_and_adapts(finetuned) -> None:
    from transformers import AutoModelForCausalLM

    from chameleon_assets.defs.io import load_value

    project, instance, starts, materialized = finetuned
    mixtures = ["uniform", "natural", "chameleon_finetune"]
    assert sorted(p for p in materialized if p.startswith("finetuned_model")) == sorted(
        f"finetuned_model[{m}|0]" for m in mixtures)

    # The finetuning domains never reach the proxy or the pretraining weights.
    assert load_value(instance, "proxy_model").train_domains.keys() == set(PRETRAIN)
    assert load_value(instance, "mixture_weights").domains == sorted(PRETRAIN)
    ft_weights = load_value(instance, "finetune_weights")
    assert ft_weights.domains == sorted(FINETUNE) and list(ft_weights.weights) == mixtures
    record = instance.fetch_materializations(dg.AssetKey("finetune_weights"), limit=1).records[0]
    derived = record.asset_materialization.metadata["derived_from"].value
    assert "finetune_embeddings version" in derived and f"finetune_affinity {ft_weights.affinity_version}" in derived

    base = load_value(instance, "base_model", "uniform|0")
    base_state = AutoModelForCausalLM.from_pretrained(base.path).state_dict()
    base_eval = load_value(instance, "evaluation", "uniform|0")
    first_ev = load_value(instance, "finetune_evaluation", f"{mixtures[0]}|0")
    for m in mixtures:
        model = load_value(instance, "finetuned_model", f"{m}|0")
        assert model.start == "base_model[uniform|0]" and model.start_version == base.data_version
        # Its first step started from the base model's parameters exactly ...
        start = starts[f"finetune[{m}|0]"]
        assert start.keys() == base_state.keys()
        assert all(torch.equal(start[k], base_state[k]) for k in start)
        # ... and the saved result loads with plain transformers and differs from the base.
        loaded = AutoModelForCausalLM.from_pretrained(model.path)
        assert any(not torch.equal(v, base_state[k]) for k, v in loaded.state_dict().items())
        assert json.loads((Path(model.path) / "training.json").read_text())["start"] == "base_model[uniform|0]"
        ev = load_value(instance, "finetune_evaluation", f"{m}|0")
        assert set(ev.bits_per_byte) == set(FINETUNE) and set(ev.pretrain_bits_per_byte) == set(PRETRAIN)
        assert ev.start_bits_per_byte.keys() == ev.bits_per_byte.keys()
        # The start model's scores (computed once for all mixtures) are its own evaluation's.
        assert ev.start_pretrain_bits_per_byte == pytest.approx(base_eval.bits_per_byte, rel=1e-9)
        assert ev.start_bits_per_byte == first_ev.start_bits_per_byte

    # One row per finetune mixture with every finetuning domain's perplexity, gain and forgetting.
    table = pd.read_csv(current(project, "finetune/comparison") / "finetune_comparison.csv", index_col=0)
    assert list(table.index) == mixtures
    assert {*(f"ppl.{d}" for d in FINETUNE), "bpb.delta", "bpb_avg", "d_bpb_avg", "start_bpb_avg", "gain_bpb",
            "pretrain_bpb_avg", "forgetting_bpb", "w.delta"} <= set(table.columns)
    assert all((table[f"ppl.{d}"] > 1).all() for d in FINETUNE)
    assert (table["gain_bpb"] < 0).all()  # finetuning on a domain lowers its held-out bits per byte

    # MLflow: one run per finetuned model, tagged stage=finetune and naming its base model's run.
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])  # the restored run's store
    runs = mlflow.search_runs(experiment_names=["chameleon"],
                              filter_string="tags.stage = 'finetune' and tags.asset_partition = 'chameleon_finetune|0'")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["tags.base_run_id"] == base.mlflow_run_id and run["tags.base_model"] == "base_model[uniform|0]"
    assert run["tags.mlflow.parentRunId"]
    for metric in ("metrics.bpb_avg", "metrics.ppl.delta", "metrics.forgetting_bpb", "metrics.gain_bpb"):
        assert run[metric] == run[metric], metric

    # A second run has nothing to do.
    from chameleon_assets.runner import converge, sync

    assert converge("run", instance=instance).empty

    # Adding a finetuning domain touches only its partitions and the finetuning weights.
    keys = ["proxy_model", "domain_corpus", "domain_embeddings", "affinity_matrix", "mixture_weights",
            "weight_diagnostics", "base_model", "evaluation", "mixture_comparison", "finetune_corpus",
            "finetune_embeddings", "finetune_affinity", "finetune_weights", "finetune_diagnostics",
            "finetuned_model", "finetune_evaluation", "finetune_comparison"]
    before = materialised(instance, keys)
    write_both(project, PRETRAIN, [*FINETUNE, "eta"])
    report = sync(instance=instance)
    assert report.partition_changes == "+finetune_domain: eta"
    new = new_materialisations(before, materialised(instance, keys))
    assert new == {**{k: [] for k in keys}, "finetune_corpus": ["eta"], "finetune_embeddings": ["eta"],
                   "finetune_affinity": [""], "finetune_weights": [""], "finetune_diagnostics": [""],
                   "finetune_comparison": [""]}  # the comparison drops the rows of models of the old weights
    assert not report.failed


@pytest.mark.slow
def test_a_retrained_start_gives_new_finetuned_models_and_a_local_folder_can_be_the_start(finetuned) -> None:
    import shutil

    import yaml
    from transformers import AutoModelForCausalLM

    from chameleon_assets.defs.io import load_value
    from chameleon_assets.defs.policy import stale_partitions
    from chameleon_assets.runner import converge, load_defs

    project, instance, starts, _ = finetuned
    old = {m: load_value(instance, "finetuned_model", f"{m}|0").data_version for m in ("uniform", "natural")}
    profile = project / "conf" / "profiles" / "tiny.yaml"
    data = yaml.safe_load(profile.read_text())

    # Another mixture's base model trains: no finetuned model goes stale (only its own start counts).
    converge("run", mixtures=["natural"], instance=instance)
    assert not {p for k, p in stale_partitions(load_defs(), instance) if k == "finetuned_model"}

    # The start retrains (a new base-model recipe): the finetuned models follow, with new versions.
    data["base_model"]["train"]["tokens"] = 2048
    profile.write_text(yaml.safe_dump(data))
    starts.clear()
    report = converge("run", instance=instance)
    assert not report.failed, report.failed
    base = load_value(instance, "base_model", "uniform|0")
    assert "base_model[uniform|0]" in report.materialized
    for m in ("uniform", "natural"):
        model = load_value(instance, "finetuned_model", f"{m}|0")
        assert model.start_version == base.data_version and model.data_version != old[m]
    assert converge("run", instance=instance).empty

    # `finetune.checkpoint`: every seed starts from the folder (here a copy of another mixture's model).
    folder = project / "my_model"
    shutil.copytree(load_value(instance, "base_model", "natural|0").path, folder)
    data["finetune"]["checkpoint"] = str(folder)
    data["finetune"]["mixtures"] = ["chameleon_finetune"]
    profile.write_text(yaml.safe_dump(data))
    starts.clear()
    report = converge("run", instance=instance)
    assert not report.failed, report.failed
    assert [p for p in report.materialized if p.startswith("finetuned_model")] == ["finetuned_model[chameleon_finetune|0]"]
    model = load_value(instance, "finetuned_model", "chameleon_finetune|0")
    assert model.start == str(folder) and model.start_mlflow_run_id == ""
    folder_state = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    start = starts["finetune[chameleon_finetune|0]"]
    assert all(torch.equal(start[k], folder_state[k]) for k in folder_state)
    table = load_value(instance, "finetune_comparison")
    # The other mixtures' models started elsewhere: left out, with the reason.
    assert list(table.rows) == ["chameleon_finetune"]
    assert "another start model" in table.excluded["uniform|0"]


def test_an_unknown_base_mixture_is_refused_by_name(project: Path) -> None:
    import yaml

    from chameleon_assets.runner import converge

    for d in PRETRAIN:
        write_domain(project / "raw", d)
    write_domain(project / "raw", "delta")
    write_both(project, PRETRAIN, ["delta"])
    profile = project / "conf" / "profiles" / "tiny.yaml"
    data = yaml.safe_load(profile.read_text())
    data["finetune"]["base"] = "unifrom"
    profile.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="finetune.base: 'unifrom' is not a mixture of conf/mixtures.yaml"):
        converge("run")
