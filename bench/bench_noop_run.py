"""Benchmark: a no-op `chameleon run` (everything up to date) in wall seconds; target 3 s.

Builds a small project in a temporary folder (the test suite's tiny profile: 4 domains,
2 mixtures, the graph's every stage), runs ``chameleon run`` once to materialise it, then
times ``BENCH_REPEATS`` (default 3) further runs in fresh processes, each of which must
print "up to date: nothing to do". The no-op cost is loading the code location, observing
the sources and evaluating the policy over every partition; `make run` on the cpu profile
adds make's own start. Writes ``bench/results/noop_run.json`` under ``runs[<BENCH_LABEL>]``
(default "public-api"; other labels are kept)::

    .venv/bin/python bench/bench_noop_run.py
    BENCH_LABEL=dagster-internals PYTHONPATH=<export of an older commit> .venv/bin/python bench/bench_noop_run.py
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
LABEL = os.environ.get("BENCH_LABEL", "public-api")
TARGET_S = 3.0
sys.path.insert(0, str(REPO / "tests"))


def main() -> int:
    from conftest import TINY_PROFILE, write_domain, write_registry

    with tempfile.TemporaryDirectory(prefix="chameleon-noop-") as tmp:
        root = Path(tmp)
        (root / "conf" / "profiles").mkdir(parents=True)
        shutil.copy(REPO / "conf" / "mixtures.yaml", root / "conf" / "mixtures.yaml")
        (root / "conf" / "profiles" / "tiny.yaml").write_text(TINY_PROFILE)
        (root / "dagster_home").mkdir()
        for d in ("alpha", "beta", "gamma", "delta"):
            write_domain(root / "raw", d)
        write_registry(root, ["alpha", "beta", "gamma", "delta"])
        env = {**os.environ, "CHAMELEON_CONF_DIR": str(root / "conf"), "CHAMELEON_DATA_DIR": str(root / "data"),
               "DAGSTER_HOME": str(root / "dagster_home"), "CHAMELEON_PROFILE": "tiny",
               "CHAMELEON_REGISTRY": str(root / "conf" / "domains.yaml"),
               "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
        cmd = [sys.executable, "-m", "chameleon_assets.cli", "run"]
        t0 = time.perf_counter()
        first = subprocess.run(cmd, env=env, capture_output=True, text=True)
        first_s = time.perf_counter() - t0
        if first.returncode != 0:
            raise SystemExit(f"the first run failed:\n{first.stdout[-3000:]}{first.stderr[-3000:]}")
        samples = []
        for i in range(REPEATS):
            t0 = time.perf_counter()
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            samples.append(time.perf_counter() - t0)
            if "up to date: nothing to do" not in out:
                raise SystemExit(f"repeat {i}: the run was not a no-op:\n{out[-3000:]}")
            print(f"  repeat {i + 1}/{REPEATS}: {samples[-1]:.2f} s", flush=True)
    median = statistics.median(samples)
    result = {"noop_run_s": round(median, 3), "target_s": TARGET_S, "within_target": median <= TARGET_S,
              "first_run_s": round(first_s, 1), "samples": [round(s, 3) for s in samples], "repeats": REPEATS,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]}}
    out_path = REPO / "bench" / "results" / "noop_run.json"
    runs = json.loads(out_path.read_text())["runs"] if out_path.exists() else {}
    runs[LABEL] = result
    out_path.write_text(json.dumps({"benchmark": "a no-op `chameleon run` (tiny profile, 4 domains, everything up to "
                                    "date), wall seconds", "runs": runs}, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
