"""Benchmark: reading domains out of one sharded dataset, 1 worker against every core.

The dataset is made from the default corpus (``data/raw``, built by ``make corpus``, or on a
node without the corpus packages the shards a wheelhouse carries, ``wheelhouse/corpus``): its
pretraining domains' documents interleaved at random into ``--shards`` shards with the
domain in ``meta.set`` (as SlimPajama's ``meta.redpajama_set_name``), written as Parquet
(zstd) and as JSON lines (zstd), about ``--mb`` MB of text in all. For each format it
times, per number of workers:

* ``read``: every document of one domain out of the whole dataset (``iter_documents``,
  one process: the filter and the decompression alone),
* ``build``: ``build_shards`` for that domain (read, filter, tokenise, split, pack),
* ``build_all``: ``build_shards`` for the whole dataset, unfiltered.

Throughput is MB of document text kept per second (the issue's measure), and MB of the
source as stored covered per second. One worker is this process, whose Rust tokenizer
encodes each batch on every core; N workers are N processes of one core each. Writes
``bench/results/corpus_read.json``.

    python bench/bench_corpus_read.py [--mb 24] [--shards 8] [--tokenizer bpe-8k] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def corpus_documents(limit_bytes: int, seed: int = 0) -> list[tuple[str, str]]:
    """(domain, text) pairs of the default pretraining domains, shuffled, about ``limit_bytes`` of text."""
    from chameleon_assets import paths
    from chameleon_assets.core.default_corpus import DEFAULT_DOMAINS

    docs = []
    carried = sorted((REPO / "wheelhouse" / "corpus").glob("*.parquet"))
    for src in DEFAULT_DOMAINS:
        path = paths.raw_dir() / src.name / "documents.jsonl"
        if path.is_file():
            with open(path, encoding="utf-8") as fh:
                docs += [(src.name, json.loads(line)["text"]) for line in fh]
        elif carried:
            import pyarrow.parquet as pq

            for shard in carried:
                table = pq.read_table(shard).to_pylist()
                docs += [(src.name, row["text"]) for row in table if row["meta"]["domain"] == src.name]
        else:
            raise SystemExit(f"{path} is missing: run `make corpus` first")
    random.Random(seed).shuffle(docs)
    out, total = [], 0
    for domain, text in docs:
        if total >= limit_bytes:
            break
        out.append((domain, text))
        total += len(text.encode("utf-8"))
    return out


def write_dataset(root: Path, docs: list[tuple[str, str]], shards: int) -> dict[str, Path]:
    """The documents as ``shards`` Parquet files and as many .jsonl.zst files; {format: glob}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    per = -(-len(docs) // shards)
    for i in range(shards):
        rows = [{"text": t, "meta": {"set": d}} for d, t in docs[i * per:(i + 1) * per]]
        (root / "parquet").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / "parquet" / f"train-{i:04d}.parquet",
                       compression="zstd", row_group_size=2048)
        (root / "jsonl").mkdir(parents=True, exist_ok=True)
        with pa.CompressedOutputStream(str(root / "jsonl" / f"train-{i:04d}.jsonl.zst"), "zstd") as out:
            out.write("".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))
    return {"parquet": root / "parquet" / "*.parquet", "jsonl.zst": root / "jsonl" / "*.jsonl.zst"}


def spec_of(pattern: Path, where: dict | None):  # noqa: ANN201
    from chameleon_assets.core.registry import parse_registry

    entry = {"name": "bench", "source": str(pattern)}
    if where:
        entry["where"] = where
    return parse_registry({"domains": [entry]})[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=24.0, help="MB of text in the generated dataset")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--tokenizer", default="bpe-8k")
    parser.add_argument("--domain", default="wiki", help="the domain the filtered runs read")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "corpus_read.json"))
    args = parser.parse_args()

    from chameleon_assets.core.corpus import build_shards, corpus_workers
    from chameleon_assets.core.documents import Scan, read_unit, units
    from chameleon_assets.core.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    cores = corpus_workers()
    work = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    try:
        docs = corpus_documents(int(args.mb * 1e6))
        text_mb = sum(len(t.encode("utf-8")) for _, t in docs) / 1e6
        domain_mb = sum(len(t.encode("utf-8")) for d, t in docs if d == args.domain) / 1e6
        globs = write_dataset(work / "data", docs, args.shards)
        rows = []
        for fmt, pattern in globs.items():
            stored_mb = sum(p.stat().st_size for p in pattern.parent.iterdir()) / 1e6
            filtered, whole = spec_of(pattern, {"meta.set": args.domain}), spec_of(pattern, None)
            t0 = time.perf_counter()
            scan = Scan()
            kept = sum(len(t.encode("utf-8")) for u in units(filtered) for t in read_unit(filtered, u, scan)) / 1e6
            seconds = time.perf_counter() - t0
            rows.append({"format": fmt, "what": "read", "workers": 1, "seconds": round(seconds, 3),
                         "text_mb": round(kept, 3), "text_mb_per_s": round(kept / seconds, 2),
                         "source_mb_per_s": round(stored_mb / seconds, 2)})
            print(rows[-1], flush=True)
            for what, spec in (("build", filtered), ("build_all", whole)):
                for workers in sorted({1, cores}):
                    out = work / f"out-{fmt}-{what}-{workers}"
                    _, report = build_shards(spec, tok, out, 0.01, 0, "bench", workers=workers)
                    rows.append({"format": fmt, "what": what, "workers": report.workers,
                                 "seconds": round(report.seconds, 3), "text_mb": round(report.text_bytes / 1e6, 3),
                                 "text_mb_per_s": round(report.mb_per_s, 2),
                                 "source_mb_per_s": round(report.source_mb_per_s, 2)})
                    print(rows[-1], flush=True)
                    shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "dataset": {"documents": len(docs), "text_mb": round(text_mb, 2), "shards": args.shards,
                    "filtered_domain": args.domain, "filtered_text_mb": round(domain_mb, 2),
                    "formats": {"parquet": "zstd, row groups of 2,048 documents", "jsonl.zst": "one zstd stream"}},
        "tokenizer": args.tokenizer,
        "rows": rows,
        "machine": {"cpus": os.cpu_count(), "workers_all": cores, "platform": platform.platform(),
                    "python": sys.version.split()[0]},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
