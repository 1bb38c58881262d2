"""Benchmark: add one domain to k through the sync path vs. rebuilding all k + 1 from scratch.

On the default corpus (``make corpus`` builds it) with the active profile (default cpu):

1. set up k domains (all default domains but one) fully: corpus, proxy, embeddings, weights;
2. "sync": register the held-out domain and time ``chameleon sync`` (its corpus and
   embeddings, then affinity, weights and their diagnostics), repeated after removing it;
3. "scratch": time re-materialising corpus + embeddings for all k + 1 domains, the
   weights and diagnostics, with the same proxy (neither path trains one).

Artefacts are content-addressed and a version built before is reused, so before each
timed repeat the script deletes the token shards and embeddings it is about to time
(the held-out domain's for "sync", every domain's for "scratch"): both paths compute.
Writes ``bench/results/add_domain.json``; the expected ratio is near 1 / (k + 1).
Run with ``make bench``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "data" / "bench" / "add_domain"
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
HELD_OUT = os.environ.get("BENCH_NEW_DOMAIN", "recipes")


def _registry(names: list[str]) -> None:
    """Write the registry; ``recipes_2`` reads ``recipes``'s files (a new domain, same data)."""
    lines = ["domains:"] + [
        f"  - {{name: {n}, source: {REPO / 'data/raw' / n.split('_')[0] / 'documents.jsonl'}}}" for n in names
    ]
    (WORK / "domains.yaml").write_text("\n".join(lines) + "\n")


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    os.environ.update({
        "CHAMELEON_DATA_DIR": str(WORK / "data"),
        "DAGSTER_HOME": str(WORK / "dagster_home"),
        "CHAMELEON_REGISTRY": str(WORK / "domains.yaml"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{WORK / 'mlflow.db'}",
    })
    from chameleon_assets.core.default_corpus import DEFAULT_DOMAINS
    from chameleon_assets.defs.corpus.assets import domain_corpus
    from chameleon_assets.defs.mixing.affinity import affinity_matrix
    from chameleon_assets.defs.mixing.diagnostics import weight_diagnostics
    from chameleon_assets.defs.mixing.embeddings import domain_embeddings
    from chameleon_assets.defs.mixing.weights import mixture_weights
    from chameleon_assets.runner import get_instance, load_defs, materialize, sync

    def forget(domains: list[str]) -> None:
        """Delete the shards and embeddings of ``domains`` and every affinity, weights and
        diagnostics version, so rebuilding them computes (a version built before would be reused)."""
        artifacts = WORK / "data" / "artifacts"
        for d in domains:
            for kind in ("corpus", "embeddings"):
                shutil.rmtree(artifacts / kind / d, ignore_errors=True)
        for kind in ("affinity", "weights", "diagnostics"):
            shutil.rmtree(artifacts / kind, ignore_errors=True)

    every = [d.name for d in DEFAULT_DOMAINS]
    if not all((REPO / "data/raw" / d / "documents.jsonl").exists() for d in every):
        print("default corpus missing: run `make corpus` first", file=sys.stderr)
        return 1
    base = [d for d in every if d != HELD_OUT]
    k = len(base)
    instance = get_instance()
    defs = load_defs()
    _registry(base)
    t0 = time.perf_counter()
    sync(instance=instance)
    setup = time.perf_counter() - t0

    sync_times, scratch_times = [], []
    for i in range(REPEATS):
        # A new name each time: a partition deleted and re-added keeps its old
        # materialisations, so re-adding the same name would (rightly) compute nothing.
        new = f"{HELD_OUT}_{i}"
        _registry(base + [new])
        t0 = time.perf_counter()
        report = sync(instance=instance)
        sync_times.append(time.perf_counter() - t0)
        assert report.partition_changes == f"+domain: {new}", report.partition_changes
        assert report.materialized[:2] == [f"domain_corpus[{new}]", f"domain_embeddings[{new}]"], report.materialized
        assert "proxy_model" not in report.materialized
        _registry(base)
        sync(instance=instance)  # remove it again (not timed)
    _registry(base + [HELD_OUT])
    sync(instance=instance)
    for _ in range(REPEATS):
        forget(base + [HELD_OUT])
        t0 = time.perf_counter()
        for d in base + [HELD_OUT]:
            materialize(defs, instance, [domain_corpus, domain_embeddings], partition_key=d)
        materialize(defs, instance, [affinity_matrix, mixture_weights, weight_diagnostics])
        scratch_times.append(time.perf_counter() - t0)

    t_sync, t_scratch = statistics.median(sync_times), statistics.median(scratch_times)
    result = {
        "benchmark": "add one domain to k",
        "k": k,
        "new_domain": HELD_OUT,
        "profile": os.environ.get("CHAMELEON_PROFILE", "cpu"),
        "repeats": REPEATS,
        "sync_s": sync_times,
        "scratch_s": scratch_times,
        "sync_median_s": round(t_sync, 2),
        "scratch_median_s": round(t_scratch, 2),
        "ratio": round(t_sync / t_scratch, 3),
        "expected_ratio_1_over_k_plus_1": round(1 / (k + 1), 3),
        "setup_s_including_proxy_training": round(setup, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    out = REPO / "bench" / "results" / "add_domain.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
