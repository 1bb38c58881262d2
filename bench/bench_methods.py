"""Benchmark: what CHAMELEON and its competitors cost, and what adding a domain costs each.

Run on an instance where `make run-methods` has materialised the methods (profile cpu by
default). It reads each mixture's measured cost (FLOPs counted from the model and the
tokens processed, wall seconds) from the current `mixture_table`, then adds one
pretraining domain (`BENCH_NEW_DOMAIN`, default `medicine_pt`: the medicine finetuning
domain's documents, registered under a new name in a temporary registry) and times:

* "chameleon": `chameleon sync`, which embeds the new domain with the existing proxy and
  recomputes the affinity, weights and diagnostics;
* each computed method's rerun on the k + 1 domains (`doremi_weights`, `doge_weights`,
  RegMix's whole swarm and fit), which their data dependencies require.

The temporary domain is then removed again (its shards and embeddings are deleted, the
methods' k-domain versions are still stored and are reused). Writes
`bench/results/methods.json`. Run with `make bench-methods`.

`--olmix` measures Olmix's mixture reuse instead, in a project of its own (a temporary
folder: conf/, data, Dagster home and MLflow store; the default corpus's raw files are
read in place) on a profile (`BENCH_PROFILE`, default `cpu`; `small`: the cpu profile with
a small proxy and swarm, `SMALL`): CHAMELEON's weights and
Olmix's (RegMix's swarm, then the fit) on the k default domains, then the same unseen
domain added and the three updates timed and costed: `chameleon sync` (the new domain's
corpus and embedding, the weights), `olmix_reuse` (its reduced swarm and fit) and a full
Olmix recomputation (every swarm run on the k + 1 domains, then the fit). It writes the
key `olmix_reuse` of `bench/results/methods.json`, keeping the rest. No base model is
trained: the quality of the three mixtures is not measured by this run.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NEW = os.environ.get("BENCH_NEW_DOMAIN", "medicine_pt")
SOURCE = os.environ.get("BENCH_NEW_SOURCE", "data/raw/medicine/documents.jsonl")


def _registry(path: Path, extra: bool) -> None:
    """conf/domains.yaml, with the new pretraining domain after its last one (recipes) when ``extra``."""
    text = (REPO / "conf" / "domains.yaml").read_text()
    if extra:
        last = "  - {name: recipes,"
        line_end = text.index("\n", text.index(last))
        text = text[:line_end] + f"\n  - {{name: {NEW}, source: {SOURCE}}}" + text[line_end:]
    path.write_text(text)


def main() -> int:
    import dagster as dg

    from chameleon_assets.defs.io import load_value
    from chameleon_assets.defs.partitions import regmix_run_partitions
    from chameleon_assets.runner import get_instance, load_defs, materialize, run_everything, sync

    instance = get_instance()
    table = load_value(instance, "mixture_table")
    missing = [m for m in ("doremi", "doge", "regmix") if m not in table.weights]
    if missing:
        print(f"{', '.join(missing)} not in mixture_table: run `make run-methods` first", file=sys.stderr)
        return 1
    costs = {m: table.costs[m] for m in table.weights if m in table.costs}
    registry = Path(tempfile.mkdtemp()) / "domains.yaml"
    os.environ["CHAMELEON_REGISTRY"] = str(registry)
    defs = load_defs()
    _registry(registry, extra=True)
    t0 = time.perf_counter()
    report = sync(instance=instance)
    t_sync = time.perf_counter() - t0
    assert "proxy_model" not in report.materialized and f"domain_embeddings[{NEW}]" in report.materialized
    assert not any(m.startswith(("doremi", "doge", "regmix")) for m in report.materialized), report.materialized
    reruns = {}
    for asset in ("doremi_weights", "doge_weights"):
        t0 = time.perf_counter()
        materialize(defs, instance, [dg.AssetKey(asset)])
        reruns[asset.removesuffix("_weights")] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for run in instance.get_dynamic_partitions(regmix_run_partitions.name):
        materialize(defs, instance, [dg.AssetKey("regmix_run")], partition_key=run)
    materialize(defs, instance, [dg.AssetKey("regmix_weights")])
    reruns["regmix"] = time.perf_counter() - t0
    k1 = len(load_value(instance, "mixture_weights").domains)

    _registry(registry, extra=False)  # back to the k domains: the stored method versions are reused
    run_everything(mixtures=["doremi", "doge", "regmix"], instance=instance)

    result = {
        "benchmark": "cost of each mixture's weights, and of adding one domain",
        "profile": os.environ.get("CHAMELEON_PROFILE", "cpu"),
        "domains_before": k1 - 1,
        "new_domain": NEW,
        "weights_cost": {m: {"flops": c["flops"], "wall_s": round(c["wall_s"], 1), "parts": c.get("parts", {})}
                         for m, c in costs.items()},
        "flops_ratio_to_chameleon_pretrain": {m: round(c["flops"] / costs["chameleon_pretrain"]["flops"], 2)
                                              for m, c in costs.items() if c["flops"] > 0},
        "add_domain_s": {"chameleon (chameleon sync)": round(t_sync, 1),
                         **{f"{m} (rerun on k + 1 domains)": round(t, 1) for m, t in reruns.items()}},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    out = REPO / "bench" / "results" / "methods.json"
    if out.is_file() and "olmix_reuse" in json.loads(out.read_text()):  # --olmix's record, kept
        result["olmix_reuse"] = json.loads(out.read_text())["olmix_reuse"]
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


# `BENCH_PROFILE=small`: the cpu profile (same tokenizer, seed and split, so the same
# corpus) with a proxy, embedding and RegMix swarm small enough to finish in minutes on a
# shared 2-core machine; the swarm keeps runs >= k + 3 for the k + 1 = 8 domains.
SMALL = {
    "proxy": {"model": {"arch": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
                        "context_length": 64},
              "train": {"tokens": 16384, "batch_size": 8, "lr": 1.0e-2, "warmup_steps": 2, "checkpoint_every": 100}},
    "embedding": {"num_samples": 16, "sample_length": 64, "batch_size": 16},
    "methods": {"regmix": {"runs": 12, "model": {"arch": "llama", "hidden_size": 16, "num_layers": 1, "num_heads": 2,
                                                 "intermediate_size": 32, "context_length": 64},
                           "train": {"tokens": 8192, "batch_size": 8, "lr": 1.0e-2, "warmup_steps": 2,
                                     "checkpoint_every": 100},
                           "max_usage": 3.0, "val_windows": 8, "candidates": 2000, "top_k": 10},
                "olmix": {"lam": 0.05, "max_repetition": 4.0, "reuse_runs": 5}},
}


def _olmix_project(root: Path, profile: str) -> Path:
    """A project of its own under ``root`` (conf/ with the repository's mixtures and profile,
    the default registry with absolute sources); the environment points at it. An existing
    ``root`` (``BENCH_DIR``) is reused: its corpus is not tokenised again."""
    import shutil

    import yaml

    conf = root / "conf"
    (conf / "profiles").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "conf" / "mixtures.yaml", conf / "mixtures.yaml")
    if profile == "small":
        data = yaml.safe_load((REPO / "conf" / "profiles" / "cpu.yaml").read_text())
        data.update(SMALL)
        (conf / "profiles" / "small.yaml").write_text(yaml.safe_dump(data))
    else:
        shutil.copy(REPO / "conf" / "profiles" / f"{profile}.yaml", conf / "profiles" / f"{profile}.yaml")
    (root / "dagster_home").mkdir(exist_ok=True)
    os.environ.update(CHAMELEON_CONF_DIR=str(conf), CHAMELEON_DATA_DIR=str(root / "data"),
                      DAGSTER_HOME=str(root / "dagster_home"), CHAMELEON_PROFILE=profile,
                      CHAMELEON_REGISTRY=str(conf / "domains.yaml"),
                      MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}")
    return conf / "domains.yaml"


def _absolute_registry(path: Path, extra: bool) -> None:
    """``_registry`` with every source made absolute (the project lives in a temporary folder)."""
    _registry(path, extra)
    text = path.read_text()
    text = text[:text.index("finetune_domains:")] if "finetune_domains:" in text else text  # no finetuning here
    path.write_text(text.replace("source: data/", f"source: {REPO}/data/"))


def olmix_main() -> int:
    """Olmix's reuse against a full recomputation and CHAMELEON's update (module docstring)."""
    profile = os.environ.get("BENCH_PROFILE", "cpu")
    root = Path(os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="bench-olmix-"))
    registry = _olmix_project(root, profile)
    _absolute_registry(registry, extra=False)

    import dagster as dg

    from chameleon_assets.defs.io import load_value
    from chameleon_assets.defs.partitions import olmix_reuse_run_partitions, regmix_run_partitions
    from chameleon_assets.runner import get_instance, load_defs, materialize, sync

    instance, defs = get_instance(), load_defs()

    def swarm_and_fit(partitions: str, run_asset: str, weights: str) -> float:
        t0 = time.perf_counter()
        for run in sorted(instance.get_dynamic_partitions(partitions), key=int):
            materialize(defs, instance, [dg.AssetKey(run_asset)], partition_key=run)
        materialize(defs, instance, [dg.AssetKey(weights)])
        return time.perf_counter() - t0

    def chameleon_embeddings_flops() -> float:
        return load_value(instance, "mixture_weights").costs["chameleon_pretrain"]["parts"]["embeddings"]

    t0 = time.perf_counter()
    assert not sync(instance=instance).failed
    t_first_sync = time.perf_counter() - t0
    embeddings_before = chameleon_embeddings_flops()
    t_olmix_first = swarm_and_fit(regmix_run_partitions.name, "regmix_run", "olmix_weights")
    first = load_value(instance, "olmix_weights")

    _absolute_registry(registry, extra=True)
    t0 = time.perf_counter()
    report = sync(instance=instance)
    t_sync = time.perf_counter() - t0
    assert not report.failed and "proxy_model" not in report.materialized, report.materialized
    t_reuse = swarm_and_fit(olmix_reuse_run_partitions.name, "olmix_reuse_run", "olmix_reuse_weights")
    reused = load_value(instance, "olmix_reuse_weights")
    t_full = swarm_and_fit(regmix_run_partitions.name, "regmix_run", "olmix_weights")
    full = load_value(instance, "olmix_weights")
    table = load_value(instance, "mixture_weights")
    embed_new = chameleon_embeddings_flops() - embeddings_before

    def row(value, wall: float) -> dict:  # noqa: ANN001
        return {"flops": value.cost["flops"], "wall_s": round(wall, 1), "parts": value.cost.get("parts", {}),
                "runs": value.details.get("runs"), "weights": dict(zip(value.domains, value.weights)),
                "held_out_mae": value.details.get("held_out_mae"),
                "rank_correlation": value.details.get("rank_correlation")}

    kept = [d for d in first.domains if d in reused.domains]
    w_first, w_reused = dict(zip(first.domains, first.weights)), dict(zip(reused.domains, reused.weights))
    ratio_error = max(abs(w_reused[d] / sum(w_reused[x] for x in kept) - w_first[d] / sum(w_first[x] for x in kept))
                      for d in kept)
    result = {
        "profile": profile, "domains_before": len(first.domains), "new_domain": NEW,
        "olmix_before": row(first, t_olmix_first),
        "after_adding": {
            "olmix (full recomputation: every swarm run on k + 1 domains, then the fit)": row(full, t_full),
            "olmix_reuse (frozen ratios, reduced swarm over the new domain)": row(reused, t_reuse),
            "chameleon (chameleon sync: the new domain's corpus and embedding, the weights)": {
                "flops": embed_new, "wall_s": round(t_sync, 1), "parts": {"embeddings": embed_new},
                "weights": dict(zip(table.domains, table.weights["chameleon_pretrain"]))},
        },
        "reuse_frozen_ratio_max_error": ratio_error,
        "first_sync_s": round(t_first_sync, 1),
        "quality": "not measured (no base model trained by this benchmark)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    out = REPO / "bench" / "results" / "methods.json"
    recorded = json.loads(out.read_text()) if out.is_file() else {}
    recorded["olmix_reuse"] = result
    out.write_text(json.dumps(recorded, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(olmix_main() if "--olmix" in sys.argv[1:] else main())
