"""``chameleon``: build the default corpus, run the graph, sync domains, open the UIs.

A refused input or a fault ends in one line on stderr (what, where, how to fix) and a
non-zero exit code; the full traceback goes to ``<data>/logs/chameleon.log``, or to the
terminal with ``--verbose``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import traceback

from chameleon_assets import paths

EXIT_FAILED_STEPS, EXIT_ERROR, EXIT_BUSY = 1, 2, 3


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

    report = run_everything(mixtures=args.mixtures, wait=not args.no_wait, parallel=args.parallel)
    return _exit_code(report)


def _cmd_sync(args: argparse.Namespace) -> int:
    from chameleon_assets.runner import sync, weights_report

    report = sync(dry_run=args.dry_run, wait=not args.no_wait, parallel=args.parallel)
    if not args.dry_run and report.materialized and not report.failed:
        print(weights_report())
    return _exit_code(report)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _exit_code(report) -> int:  # noqa: ANN001
    """Non-zero when a step failed or a source could not be read: both were printed as they happened."""
    if report.failed:
        print(f"{len(report.failed)} step(s) failed: {', '.join(report.failed)}", file=sys.stderr)
        return EXIT_FAILED_STEPS
    if report.source_errors:
        print(f"{len(report.source_errors)} input(s) refused: {', '.join(report.source_errors)}", file=sys.stderr)
        return EXIT_FAILED_STEPS
    return 0


def _cmd_train_tokenizer(args: argparse.Namespace) -> int:
    import json

    from chameleon_assets.core.default_corpus import DEFAULT_DOMAINS
    from chameleon_assets.core.tokenizer import BUNDLED_DIR, train_bpe

    texts: list[str] = []
    # The default pretraining domains only: finetuning text never shapes the tokenizer.
    domain_dirs = [paths.raw_dir() / src.name for src in sorted(DEFAULT_DOMAINS, key=lambda s: s.name)]
    for domain_dir in (d for d in domain_dirs if (d / "documents.jsonl").exists()):
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
    from chameleon_assets.ui import serve

    return serve(args.dagster_port, args.mlflow_port)


def main(argv: list[str] | None = None) -> int:
    verbose = "print the full traceback of an error (it always goes to data/logs/chameleon.log)"
    parser = argparse.ArgumentParser(prog="chameleon", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true", help=verbose)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build-corpus", parents=[common], help="write the default corpus to data/raw/")
    p.add_argument("--only", nargs="*", help="domains to build (default: all)")
    p.add_argument("--force", action="store_true", help="rebuild even if a manifest exists")
    p.set_defaults(func=_cmd_build_corpus)

    parallel = ("partitions of one asset (domains, mixtures) to run at once, each in its own process; training "
                "steps are in the Dagster concurrency pool 'gpu' (README, 'Scaling out')")
    no_wait = "if another `chameleon run`/`sync` is under way, exit (code 3) instead of waiting for it"
    p = sub.add_parser("run", parents=[common], help="materialise the whole graph and print the comparison")
    p.add_argument("--mixtures", nargs="*", help="mixtures to train (default: the profile's list)")
    p.add_argument("--no-wait", action="store_true", help=no_wait)
    p.add_argument("--parallel", type=_positive, default=1, metavar="N", help=parallel)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("sync", parents=[common], help="bring partitions in line with conf/domains.yaml")
    p.add_argument("--dry-run", action="store_true",
                   help="check the registry and its sources, report partition and source changes and what is "
                        "stale or damaged now; record and run nothing")
    p.add_argument("--no-wait", action="store_true", help=no_wait)
    p.add_argument("--parallel", type=_positive, default=1, metavar="N", help=parallel)
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("train-tokenizer", parents=[common], help="retrain the bundled byte-level BPE from data/raw/")
    p.add_argument("--name", default="bpe-8k")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--bytes-per-domain", type=int, default=1_500_000)
    p.set_defaults(func=_cmd_train_tokenizer)

    p = sub.add_parser("ui", parents=[common], help="start the Dagster and MLflow UIs on 127.0.0.1")
    p.add_argument("--dagster-port", type=int, default=3000)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.set_defaults(func=_cmd_ui)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 (the one place that turns any error into one line)
        return _report_error(exc, args.verbose)


def log_path():  # noqa: ANN201
    """Where the CLI appends the full traceback of every error (``<data>/logs/chameleon.log``)."""
    return paths.data_dir() / "logs" / "chameleon.log"


def _report_error(exc: BaseException, verbose: bool) -> int:
    """Print one line naming what failed (the trace only with ``--verbose``); log the trace."""
    from chameleon_assets.core.locks import LockBusy

    trace = "".join(traceback.format_exception(exc))
    where = ""
    try:
        log = log_path()
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"--- {datetime.datetime.now().isoformat(timespec='seconds')} chameleon "
                     f"{' '.join(sys.argv[1:])}\n{trace}\n")
        where = f" (full trace in {log})"
    except OSError:
        verbose = True  # no log to point at: the trace goes to the terminal
    if verbose:
        print(trace, file=sys.stderr, end="")
    if isinstance(exc, LockBusy):
        print(f"error: busy: {exc}; run again when it ends, or leave out --no-wait to wait", file=sys.stderr)
        return EXIT_BUSY
    message = " ".join(str(exc).split()) or type(exc).__name__
    kind = "" if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: "
    print(f"error: {kind}{message}{'' if verbose else where}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
