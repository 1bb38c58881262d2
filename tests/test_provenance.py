"""Configuration in the data versions, one policy for what is out of date, exact reads.

Each test starts from a fully materialised project (three domains, the tiny profile
without few-shot tasks), changes one thing, and asserts on the event log exactly which
asset partitions the CLI path materialised, and that the stale marks the UI shows
before the run are the first of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import TINY_PROFILE, current, write_domain, write_registry

# Its tests share one materialised project (saved_project): one worker builds it once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("provenance")]

# The tiny profile with distinct proxy and base budgets (so each can be edited alone)
# and perplexity-only evaluation (few-shot tasks are tested elsewhere).
PROFILE = (
    TINY_PROFILE.replace(
        "  train: {tokens: 4096, batch_size: 4, lr: 1.0e-2, warmup_steps: 2, checkpoint_every: 8}\n"
        "embedding:",
        "  train: {tokens: 3072, batch_size: 4, lr: 1.0e-2, warmup_steps: 2, checkpoint_every: 8}\n"
        "embedding:",
    ).replace("tasks: [arc_easy_local]", "tasks: []")
)
DOMAINS = ["alpha", "beta", "gamma"]
BOTH = ["chameleon_pretrain|0", "uniform|0"]  # (mixture, seed) partitions of the models


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _names(key: str, partitions) -> set[str]:  # noqa: ANN001
    return {f"{key}[{p}]" if p else key for p in partitions}


def _since(instance: dg.DagsterInstance, storage_id: int) -> list[str]:
    """Every asset partition materialised after event ``storage_id``, as ``key[partition]``."""
    out = []
    for key in instance.get_asset_keys():
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=storage_id), limit=1000
        ).records
        out += [key.to_user_string() + (f"[{r.partition_key}]" if r.partition_key else "") for r in records]
    return sorted(out)


def _stale_now(instance: dg.DagsterInstance) -> set[str]:
    """What the UI marks stale once the changed sources are observed (as the sensor would)."""
    from chameleon_assets.defs.policy import stale_partitions
    from chameleon_assets.defs.resources import ChameleonConfig
    from chameleon_assets.defs.sources import record_observations, source_observations
    from chameleon_assets.runner import load_defs

    observations, errors = source_observations(instance, ChameleonConfig())
    assert not errors
    record_observations(instance, observations)
    return {f"{k}[{p}]" if p else k for k, p in stale_partitions(load_defs(), instance)}


def build_project(root: Path):  # noqa: ANN201
    """Run once per module by the ``saved_project`` fixture."""
    from chameleon_assets.runner import get_instance, run_everything

    (root / "conf/profiles/tiny.yaml").write_text(PROFILE)
    for d in DOMAINS + ["delta"]:
        write_domain(root / "raw", d)
    write_registry(root, DOMAINS)
    instance = get_instance()
    assert not run_everything(instance=instance).failed
    return instance


@pytest.fixture
def ran(restored_project):  # noqa: ANN001, ANN201
    """Three domains, everything materialised by `chameleon run` on the tiny profile."""
    return restored_project


def _rerun(instance: dg.DagsterInstance) -> tuple[set[str], list[str]]:
    from chameleon_assets.runner import run_everything

    mark = instance.event_log_storage.get_maximum_record_id()
    stale = _stale_now(instance)
    report = run_everything(instance=instance)
    assert not report.failed, report.failed
    return stale, _since(instance, mark)


DOWNSTREAM_OF_WEIGHTS = {"mixture_weights", "weight_diagnostics", "mixture_table", *_names("base_model", BOTH),
                         "evaluation[chameleon_pretrain|0]", "mixture_comparison"}
DOWNSTREAM_OF_EMBEDDINGS = {*_names("domain_embeddings", DOMAINS), "affinity_matrix"} | DOWNSTREAM_OF_WEIGHTS

CASES = {
    # file, old text, new text, stale before the run, materialised by the run
    "lambda": ("mixtures.yaml", "lam: 10.0", "lam: 1.0", {"mixture_weights"}, DOWNSTREAM_OF_WEIGHTS),
    "pretraining temperature": ("mixtures.yaml", "t_pretrain: 5.0", "t_pretrain: 2.0", {"mixture_weights"},
                                DOWNSTREAM_OF_WEIGHTS),
    "embedding samples": ("profiles/tiny.yaml", "num_samples: 8", "num_samples: 6",
                          _names("domain_embeddings", DOMAINS), DOWNSTREAM_OF_EMBEDDINGS),
    "proxy budget": ("profiles/tiny.yaml", "tokens: 3072", "tokens: 2048", {"proxy_model"},
                     {"proxy_model"} | DOWNSTREAM_OF_EMBEDDINGS),
    # UniMax's budget defaults to the base models' token budget, so the weights follow it too.
    "base model token budget": ("profiles/tiny.yaml", "tokens: 4096", "tokens: 2048",
                                {"mixture_weights", *_names("base_model", BOTH)},
                                {"mixture_weights", "weight_diagnostics", "mixture_table", *_names("base_model", BOTH),
                                 *_names("evaluation", BOTH), "mixture_comparison"}),
    # With UniMax's budget given explicitly, the base models' budget is read by base_model alone.
    "base model token budget, UniMax budget explicit": (
        "profiles/tiny.yaml", "tokens: 4096", "tokens: 2048", _names("base_model", BOTH),
        {*_names("base_model", BOTH), *_names("evaluation", BOTH), "mixture_comparison"}),
    # The comparison reads the evaluation settings too: it keeps only rows made with the current ones.
    "evaluation windows": ("profiles/tiny.yaml", "ppl_windows: 4", "ppl_windows: 3",
                           {*_names("evaluation", BOTH), "mixture_comparison"},
                           {*_names("evaluation", BOTH), "mixture_comparison"}),
    "validation split": ("profiles/tiny.yaml", "val_fraction: 0.2", "val_fraction: 0.25",
                         _names("domain_corpus", DOMAINS),
                         _names("domain_corpus", DOMAINS) | DOWNSTREAM_OF_EMBEDDINGS
                         | {"evaluation[uniform|0]"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_configuration_change_recomputes_exactly_what_reads_it(ran, case: str) -> None:
    project, instance = ran
    file, old, new, stale, expected = CASES[case]
    if "UniMax budget explicit" in case:
        _edit(project / "conf/mixtures.yaml", "unimax_budget_tokens: null", "unimax_budget_tokens: 4096")
        _rerun(instance)  # (that stales the weights; then start from an up-to-date graph)
    _edit(project / "conf" / file, old, new)
    stale_before, materialized = _rerun(instance)
    assert stale_before == stale
    assert set(materialized) == expected and len(materialized) == len(expected)
    assert "proxy_model" not in materialized or case == "proxy budget"
    _, again = _rerun(instance)
    assert again == []  # and then it is up to date


def test_a_new_lambda_reaches_the_weights_and_a_model_whose_weights_did_not_change_is_reused(ran) -> None:
    project, instance = ran
    uniform_before = current(project, "base_model", "uniform/seed-0")
    _edit(project / "conf/mixtures.yaml", "lam: 10.0", "lam: 1.0")
    _rerun(instance)
    assert json.loads((current(project, "weights") / "weights.json").read_text())["params"]["lambda"] == 1.0
    assert current(project, "base_model", "uniform/seed-0") == uniform_before
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("base_model"), asset_partitions=["uniform|0"]), limit=1).records[0]
    assert record.asset_materialization.metadata["reused_existing_version"].value is True


def test_a_failed_weights_step_is_completed_once_its_cause_is_fixed(ran, monkeypatch: pytest.MonkeyPatch) -> None:
    from chameleon_assets.defs import policy
    from chameleon_assets.defs.mixing import weights as weights_module
    from chameleon_assets.runner import load_defs, sync

    project, instance = ran
    write_registry(project, DOMAINS + ["delta"])  # a new domain: the affinity and the weights are stale

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("planted: the weights step broke")

    # A context of its own: undoing the fixture-wide monkeypatch would also undo the restored
    # project's environment (its profile, its registry).
    with monkeypatch.context() as patch:
        patch.setattr(weights_module, "_compute_weights", broken)
        report = sync(instance=instance)
        assert report.materialized == ["domain_corpus[delta]", "domain_embeddings[delta]", "affinity_matrix"]
        assert list(report.failed) == ["mixture_weights"]
        assert "planted: the weights step broke" in report.failed["mixture_weights"]
        # The daemon's policy asks for it again at its next evaluation: a failure is not forgotten.
        assert (dg.AssetKey("mixture_weights"), None) in policy.requested(load_defs(), instance)

    # The daemon (its automation conditions) and the CLI ask for the same work.
    from chameleon_assets.defs.resources import ChameleonConfig
    from chameleon_assets.defs.sources import record_observations, source_observations

    record_observations(instance, source_observations(instance, ChameleonConfig())[0])
    daemon = policy.requested(load_defs(), instance)
    cli = policy.requested(dg.Definitions(assets=policy.with_requests(load_defs().assets, "sync"),
                                          resources=load_defs().resources), instance)
    assert daemon == cli == [(dg.AssetKey("mixture_weights"), None)]
    report = sync(instance=instance)
    assert report.materialized[0] == "mixture_weights" and not report.failed
    weights = json.loads((current(project, "weights") / "weights.json").read_text())
    assert weights["domains"] == ["alpha", "beta", "delta", "gamma"]


def test_switching_profile_rebuilds_for_the_new_tokenizer_and_switching_back_reuses(ran) -> None:
    from chameleon_assets.runner import run_everything

    project, instance = ran
    (project / "conf/profiles/tiny-gpt2.yaml").write_text(PROFILE.replace("tokenizer: bpe-8k", "tokenizer: gpt2"))
    before = current(project, "proxy_model")
    mark = instance.event_log_storage.get_maximum_record_id()
    import os

    os.environ["CHAMELEON_PROFILE"] = "tiny-gpt2"
    try:
        stale = _stale_now(instance)
        report = run_everything(instance=instance)
    finally:
        os.environ["CHAMELEON_PROFILE"] = "tiny"
    assert not report.failed
    # The tokenizer is in every section that tokenises or builds a model.
    assert stale == (_names("domain_corpus", DOMAINS) | {"proxy_model"} | _names("domain_embeddings", DOMAINS)
                     | _names("base_model", BOTH) | _names("evaluation", BOTH) | {"mixture_comparison"})
    assert set(_since(instance, mark)) == (
        _names("domain_corpus", DOMAINS) | {"proxy_model"} | DOWNSTREAM_OF_EMBEDDINGS | {"evaluation[uniform|0]"}
    )
    assert json.loads((current(project, "proxy_model") / "config.json").read_text())["vocab_size"] == 50257
    assert current(project, "proxy_model") != before

    mark = instance.event_log_storage.get_maximum_record_id()
    report = run_everything(instance=instance)  # back to bpe-8k: every version exists already
    assert not report.failed
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("base_model"), after_storage_id=mark), limit=10).records
    assert len(records) == 2 and all(r.asset_materialization.metadata["reused_existing_version"].value
                                     for r in records)
    assert current(project, "proxy_model") == before


def test_a_base_model_never_resumes_a_checkpoint_of_other_data(ran, monkeypatch: pytest.MonkeyPatch) -> None:
    from chameleon_assets.core import train
    from chameleon_assets.runner import run_everything

    project, instance = ran
    original = train._save_checkpoint

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        raise RuntimeError("killed after the first checkpoint")

    write_domain(project / "raw", "alpha", text="Edited once: the mill burned down in the winter of 1901.")
    monkeypatch.setattr(train, "_save_checkpoint", save_then_die)
    assert set(run_everything(instance=instance).failed) == _names("base_model", BOTH)
    monkeypatch.setattr(train, "_save_checkpoint", original)

    def resumed() -> dict[str, int]:
        records = instance.fetch_materializations(dg.AssetKey("base_model"), limit=2).records
        return {r.partition_key: r.asset_materialization.metadata["resumed_from_step"].value for r in records}

    original_text = (project / "raw/alpha/documents.jsonl").read_text()
    write_domain(project / "raw", "alpha", text="Edited twice: the mill was rebuilt in stone.")
    assert not run_everything(instance=instance).failed
    assert resumed() == {"chameleon_pretrain|0": 0, "uniform|0": 0}  # the checkpoints were of other data

    (project / "raw/alpha/documents.jsonl").write_text(original_text)  # the data they were trained on
    assert not run_everything(instance=instance).failed
    assert resumed() == {"chameleon_pretrain|0": 8, "uniform|0": 8}


def test_the_comparison_says_which_versions_it_holds_and_drops_stale_evaluations(ran) -> None:
    from chameleon_assets.defs.io import load_value, latest_version
    from chameleon_assets.runner import sync

    project, instance = ran
    table = load_value(instance, "mixture_comparison")
    assert table.included["uniform|0"] == {"base_model": latest_version(instance, "base_model", "uniform|0"),
                                         "evaluation": latest_version(instance, "evaluation", "uniform|0")}
    _edit(project / "conf/mixtures.yaml", "lam: 10.0", "lam: 1.0")
    sync(instance=instance)  # new weights, but sync trains no model
    table = load_value(instance, "mixture_comparison")
    assert list(table.rows) == ["uniform"]  # its weights did not change
    assert "other weights" in table.excluded["chameleon_pretrain|0"]


def test_removing_a_domain_retrains_and_reevaluates_but_never_touches_the_proxy(ran) -> None:
    project, instance = ran
    write_registry(project, ["alpha", "beta"])
    stale, materialized = _rerun(instance)
    assert stale == {"affinity_matrix"}  # the registered domain set is an input of the affinity
    assert set(materialized) == {"affinity_matrix", "mixture_weights", "weight_diagnostics", "mixture_table",
                                 *_names("base_model", BOTH), *_names("evaluation", BOTH), "mixture_comparison"}
    assert json.loads((current(project, "weights") / "weights.json").read_text())["domains"] == ["alpha", "beta"]


def test_a_retrained_model_whose_evaluation_failed_leaves_the_comparison(ran, monkeypatch: pytest.MonkeyPatch) -> None:
    from chameleon_assets.defs.io import load_value
    from chameleon_assets.defs.models import assets as models
    from chameleon_assets.runner import run_everything

    project, instance = ran
    _edit(project / "conf/profiles/tiny.yaml", "tokens: 4096", "tokens: 2048")

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    monkeypatch.setattr(models, "_evaluate", broken)
    report = run_everything(instance=instance)
    assert set(report.failed) == _names("evaluation", BOTH)
    table = load_value(instance, "mixture_comparison")
    assert table.rows == {}  # both rows were of the models that were just replaced
    assert table.excluded == {m: "evaluation of an older base model" for m in BOTH}


def test_a_run_killed_mid_step_is_redone_by_the_next_run(project: Path) -> None:
    """SIGKILL leaves a Dagster run STARTED; the next CLI call marks it failed and redoes the partition."""
    import os
    import subprocess
    import sys

    from chameleon_assets.runner import get_instance, sync

    (project / "conf/profiles/tiny.yaml").write_text(PROFILE)
    write_domain(project / "raw", "alpha")
    write_registry(project, ["alpha"])
    killer = (
        "import os, signal\n"
        "import chameleon_assets.core.corpus as c\n"
        "c.build_shards = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from chameleon_assets.runner import sync\n"
        "sync()\n"
    )
    out = subprocess.run([sys.executable, "-c", killer], env=dict(os.environ), capture_output=True, text=True)
    assert out.returncode == -9
    instance = get_instance()
    assert [r.status.value for r in instance.get_runs()] == ["STARTED"]
    report = sync(instance=instance)
    assert "domain_corpus[alpha]" in report.materialized and not report.failed
    assert sorted(r.status.value for r in instance.get_runs()) == ["FAILURE"] + ["SUCCESS"] * len(report.materialized)


def test_a_bad_mixtures_value_stops_the_cli_before_anything_is_planned(project: Path) -> None:
    """Like a bad profile value: one ConfigError naming file and field, no run, no partition."""
    from chameleon_assets.runner import get_instance, sync
    from chameleon_assets.settings import ConfigError

    (project / "conf/profiles/tiny.yaml").write_text(PROFILE)
    write_domain(project / "raw", "alpha")
    write_registry(project, ["alpha"])
    _edit(project / "conf/mixtures.yaml", "lam: 10.0", "lam: 0")
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match=r"mixtures.yaml: chameleon.lam: must be greater than 0 \(got 0\)$"):
            sync(dry_run=dry_run)
    instance = get_instance()
    assert instance.get_runs() == [] and instance.get_dynamic_partitions("domain") == []
