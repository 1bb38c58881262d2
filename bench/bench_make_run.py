"""Benchmark: `make run` on a fresh clone, as a new user would run it, installs included.

Clones this repository (its committed HEAD) into a temporary folder, then times
``make run`` there with an empty uv cache (``UV_CACHE_DIR`` in the temporary folder), so
every package is fetched and unpacked again; the pip cache that installs uv itself is the
machine's. The phases are read from make's own output: installs (venv + uv), the corpus
build, and the graph (``chameleon run``, with each step's seconds as it prints them).

Writes ``bench/results/make_run.json`` under ``runs[<--label>]`` (other labels are kept),
with ``make_run_s`` (the whole wall time), the phases, the slowest steps, the training
speeds the progress bars reported and ``import dagster`` as a gauge of how fast the
machine is that day (this 2-core machine has ranged over about 2x between days)::

    .venv/bin/python bench/bench_make_run.py --label after
    .venv/bin/python bench/bench_make_run.py --label before --commit 46a4d13

Takes as long as `make run` (about 10 minutes on 2 cores) and needs nothing else running.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "make_run.json"
STEP = re.compile(r"^  (?!FAILED)(\S+) ([0-9.]+)s$")
SPEED = re.compile(r"^(proxy|base\[[^\]]+\]|finetune\[[^\]]+\]|[a-z_]+\[[^\]]+\]):.*100%.*tok_s=([0-9,]+)\]")


def _import_dagster_s(python: Path) -> float:
    """Median of 3 fresh ``import dagster`` timings with ``python``."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([str(python), "-c", "import dagster"], check=True)
        times.append(time.perf_counter() - t0)
    return sorted(times)[1]


def measure(target: str, rev: str | None = None) -> dict:
    """Clone (at ``rev``, default HEAD), run ``make <target>`` with an empty uv cache, return the timings."""
    with tempfile.TemporaryDirectory(prefix="bench-make-run-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        if rev is not None:
            subprocess.run(["git", "checkout", "-q", rev], cwd=clone, check=True)
        installer = "uv" if "uv pip install" in (clone / "Makefile").read_text() else "pip (the machine's pip cache)"
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                                text=True, check=True).stdout.strip()
        env = {**os.environ, "UV_CACHE_DIR": str(Path(tmp) / "uv-cache")}
        env.pop("VIRTUAL_ENV", None)
        marks: dict[str, float] = {}
        lines: list[str] = []
        t0 = time.perf_counter()
        proc = subprocess.Popen(["make", target], cwd=clone, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for raw in proc.stdout:
            now = time.perf_counter() - t0
            for line in raw.replace("\r", "\n").splitlines():
                lines.append(line)
                if "bin/chameleon build-corpus" in line and "corpus_start" not in marks:
                    marks["corpus_start"] = now
                if "bin/chameleon run" in line and "graph_start" not in marks:
                    marks["graph_start"] = now
        rc = proc.wait()
        total = time.perf_counter() - t0
        if rc != 0:
            sys.exit(f"make {target} failed (exit {rc}); its last lines:\n" + "\n".join(lines[-30:]))
        steps = {m.group(1): float(m.group(2)) for m in map(STEP.match, lines) if m}
        speeds = {m.group(1): int(m.group(2).replace(",", "")) for m in map(SPEED.match, lines) if m}
        done = [float(m.group(1)) for m in (re.search(r"done in ([0-9.]+)\s*s", x) for x in lines) if m]
        return {
            "commit": commit,
            "target": f"make {target}",
            "installer": installer,
            "make_run_s": round(total, 1),
            "installs_s": round(marks.get("corpus_start", 0.0), 1),
            "corpus_s": round(marks.get("graph_start", 0.0) - marks.get("corpus_start", 0.0), 1),
            "graph_s": round(total - marks.get("graph_start", 0.0), 1),
            "graph_done_in_s": done[-1] if done else None,
            "within_10_min": total <= 600,
            "slowest_steps_s": dict(sorted(steps.items(), key=lambda kv: -kv[1])[:12]),
            "steps_s_total": round(sum(steps.values()), 1),
            "steps_s": steps,
            "training_tokens_per_s": speeds,
            "import_dagster_s": round(_import_dagster_s(clone / ".venv" / "bin" / "python"), 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="key under 'runs' in the results file")
    parser.add_argument("--target", default="run", help="the make target (default: run)")
    parser.add_argument("--commit", default=None,
                        help="measure this commit instead of HEAD (e.g. the one before a change, for 'before')")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    result = measure(args.target, args.commit)
    result.update(label=args.label, date=time.strftime("%Y-%m-%d %H:%M"), machine=f"{os.cpu_count()} CPU cores")
    data = json.loads(args.out.read_text()) if args.out.exists() else {
        "benchmark": "`make run` on a fresh clone, installs (uv, empty cache) included, wall seconds"}
    data.setdefault("runs", {})[args.label] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
