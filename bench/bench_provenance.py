"""Benchmark: what loading the code location and a no-op `make run` cost, against `import dagster`.

Targets (issue "Provenance"): loading the definitions at most 1.5x importing dagster
alone; a no-op `make run` (everything up to date) at most 3x importing dagster. Each
is measured in fresh processes, interleaved, median of ``BENCH_REPEATS`` (default 5).

The no-op run uses this checkout's ``data/`` as `make run` left it: the script runs
`make run` once first (a no-op if the graph is up to date, the whole pipeline if not),
then checks that the timed repeats really did nothing. Writes
``bench/results/provenance.json``. Run with ``make bench``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
PY = str(REPO / ".venv" / "bin" / "python")


def _timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, out.stdout


def main() -> int:
    print("make run (once, to bring data/ up to date) ...", flush=True)
    subprocess.run(["make", "run"], cwd=REPO, check=True, capture_output=True)
    samples: dict[str, list[float]] = {"import_dagster_s": [], "import_definitions_s": [], "noop_make_run_s": []}
    for i in range(REPEATS):
        samples["import_dagster_s"].append(_timed([PY, "-c", "import dagster"])[0])
        samples["import_definitions_s"].append(_timed([PY, "-c", "import chameleon_assets.definitions"])[0])
        seconds, stdout = _timed(["make", "run"])
        if "up to date: nothing to do" not in stdout:
            raise SystemExit(f"repeat {i}: `make run` was not a no-op:\n{stdout[-2000:]}")
        samples["noop_make_run_s"].append(seconds)
        print(f"  repeat {i + 1}/{REPEATS}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in samples.items()), flush=True)
    med = {k: round(statistics.median(v), 3) for k, v in samples.items()}
    result = {
        **med,
        "definitions_over_dagster": round(med["import_definitions_s"] / med["import_dagster_s"], 2),
        "noop_make_run_over_dagster": round(med["noop_make_run_s"] / med["import_dagster_s"], 2),
        "targets": {"definitions_over_dagster": 1.5, "noop_make_run_over_dagster": 3.0},
        "samples": {k: [round(x, 3) for x in v] for k, v in samples.items()},
        "repeats": REPEATS,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
    }
    out = REPO / "bench" / "results" / "provenance.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("samples", "machine")}, indent=2))
    ok = (result["definitions_over_dagster"] <= 1.5 and result["noop_make_run_over_dagster"] <= 3.0)
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
