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
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
