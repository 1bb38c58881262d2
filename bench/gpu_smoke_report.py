"""What a `bench/gpu_smoke.sh` run did, read back from its Dagster instance and MLflow store:
step times, training speed per model, how the corpus was read, the comparison tables, and
the machine. Writes the JSON ``bench/gpu_smoke.sh`` names (``bench/results/gpu_smoke.json``).

    python bench/gpu_smoke_report.py --out FILE --run-seconds S [--install-seconds S] [--log FILE]

Reads the instance at ``$DAGSTER_HOME`` and the store at ``$MLFLOW_TRACKING_URI`` (the
script sets both to the run's own data folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The target of the issue: the whole graph within 8 minutes on one H100/H200.
TARGET_S = 480
TRAINING_ASSETS = ("proxy_model", "base_model", "finetuned_model")
TRAINING_KEYS = ("tokens_per_s", "mfu", "peak_source", "training_device", "training_precision", "training_loss",
                 "cuda_visible_devices", "device_slot", "first_step_s", "warmup_s", "steady_s", "tokens", "steps")
CORPUS_KEYS = ("documents", "train_tokens", "text_mb_per_s", "source_mb_per_s", "read_workers", "read_units",
               "read_seconds", "where")


def step_times(instance) -> list[dict]:  # noqa: ANN001
    """Every successful step: asset, partition, seconds (step start to success), in start order."""
    import dagster as dg

    steps = []
    for run in instance.get_runs():
        times: dict = {}
        for entry in instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_START,
                                                             dg.DagsterEventType.STEP_SUCCESS}):
            times.setdefault(entry.step_key, {})[entry.dagster_event.event_type] = entry.timestamp
        for step, t in times.items():
            if len(t) == 2:
                start, end = t[dg.DagsterEventType.STEP_START], t[dg.DagsterEventType.STEP_SUCCESS]
                steps.append({"asset": step, "partition": run.tags.get("dagster/partition", ""),
                              "start": start, "seconds": round(end - start, 2)})
    steps.sort(key=lambda s: s["start"])
    t0 = steps[0]["start"] if steps else 0.0
    for s in steps:
        s["start"] = round(s.pop("start") - t0, 2)
    return steps


def metadata_of(instance, asset: str, keys: tuple[str, ...]) -> dict[str, dict]:  # noqa: ANN001
    """``{partition or asset: {key: value}}`` of the latest materialisation of each partition of ``asset``."""
    import dagster as dg

    out: dict[str, dict] = {}
    for record in instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records:
        name = record.partition_key or asset
        if name in out:
            continue  # records come newest first
        metadata = record.asset_materialization.metadata
        out[name] = {k: metadata[k].value for k in keys if k in metadata}
    return out


def comparison(instance, asset: str) -> dict:  # noqa: ANN001
    from chameleon_assets.defs.io import load_value

    try:
        table = load_value(instance, asset)
    except FileNotFoundError as exc:
        return {"missing": str(exc)}
    return json.loads(json.dumps({"rows": table.rows, "domains": table.domains, "tasks": table.tasks,
                                  "baseline": table.baseline, "excluded": table.excluded, "notes": table.notes},
                                 default=str))


def mlflow_runs() -> int:
    from mlflow.tracking import MlflowClient

    from chameleon_assets import paths

    client = MlflowClient(paths.mlflow_tracking_uri())
    experiments = client.search_experiments()
    return len(client.search_runs([e.experiment_id for e in experiments], max_results=10_000)) if experiments else 0


def environment() -> dict:
    import torch

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
           "torch": torch.__version__, "cuda": torch.version.cuda, "gpus": torch.cuda.device_count()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True)
    # What the node holds: the versions a later wheelhouse can be built against (NODE_PACKAGES).
    env["packages"] = [line for line in freeze.stdout.splitlines() if "==" in line]
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--run-seconds", type=float, required=True)
    parser.add_argument("--install-seconds", type=float, default=None)
    parser.add_argument("--log", default=None, help="the run's output, for its warnings")
    parser.add_argument("--profile", default=os.environ.get("CHAMELEON_PROFILE", "cpu"))
    parser.add_argument("--exit-code", type=int, default=0)
    args = parser.parse_args()

    from chameleon_assets.runner import get_instance

    instance = get_instance()
    steps = step_times(instance)
    by_asset: dict[str, float] = {}
    for s in steps:
        by_asset[s["asset"]] = round(by_asset.get(s["asset"], 0.0) + s["seconds"], 2)
    log = Path(args.log).read_text(errors="replace") if args.log and Path(args.log).is_file() else ""
    result = {
        "profile": args.profile,
        "exit_code": args.exit_code,
        "install_s": args.install_seconds,
        "run_s": round(args.run_seconds, 1),
        "target_s": TARGET_S,
        "within_target": args.exit_code == 0 and args.run_seconds <= TARGET_S,
        "steps_by_asset_s": dict(sorted(by_asset.items(), key=lambda kv: -kv[1])),
        "training": {asset: metadata_of(instance, asset, TRAINING_KEYS) for asset in TRAINING_ASSETS},
        "corpus": {asset: metadata_of(instance, asset, CORPUS_KEYS) for asset in ("domain_corpus", "finetune_corpus")},
        "comparison": comparison(instance, "mixture_comparison"),
        "finetune_comparison": comparison(instance, "finetune_comparison"),
        "mlflow_runs": mlflow_runs(),
        "warnings": [line for line in log.splitlines() if line.startswith("warning:")],
        "failed": [line.strip() for line in log.splitlines() if line.strip().startswith("FAILED")],
        "steps": steps,
        "environment": environment(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"gpu smoke ({args.profile}): run {args.run_seconds:.0f} s (target {TARGET_S} s), "
          f"{len(steps)} steps; wrote {args.out}")
    for asset, seconds in list(result["steps_by_asset_s"].items())[:8]:
        print(f"  {asset:24s} {seconds:8.1f} s")
    for asset, runs in result["training"].items():
        for name, m in runs.items():
            print(f"  {asset}[{name}]: {m.get('tokens_per_s', 0):,} tokens/s on {m.get('training_device', '?')}"
                  + (f", MFU {m['mfu']:.3f}" if m.get("mfu") is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
