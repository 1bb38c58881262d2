"""bench/gpu_smoke.sh, rehearsed on the CPU: the same script, a tiny profile of the same
graph (corpus, proxy, embeddings, weights, base models, lm-eval, finetuning, comparisons),
and a results file holding step times, tokens/s and the comparison."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_PROFILE, write_domain

REPO = Path(__file__).resolve().parents[1]
# The tiny profile with the smoke's shape cut down: two mixtures, one seed, smaller budgets,
# one that reads every (six-document) domain more than 4 times, so the repeat warning shows,
# and the finetuning stage.
BUDGET = 6144
REHEARSAL = TINY_PROFILE \
    .replace("  train: {tokens: 4096, batch_size: 4, lr: 1.0e-2, warmup_steps: 2, checkpoint_every: 8}\n  mixtures",
             f"  train: {{tokens: {BUDGET}, batch_size: 4, lr: 1.0e-2, warmup_steps: 2, checkpoint_every: 64}}\n"
             "  mixtures") \
    .replace("train: {tokens: 4096, batch_size: 4, lr: 1.0e-2, warmup_steps: 2, checkpoint_every: 8}",
             "train: {tokens: 2048, batch_size: 4, lr: 1.0e-2, warmup_steps: 2, checkpoint_every: 64}") \
    .replace("train: {tokens: 2048, batch_size: 4, lr: 5.0e-3, warmup_steps: 2, checkpoint_every: 4}",
             "train: {tokens: 1024, batch_size: 4, lr: 5.0e-3, warmup_steps: 2, checkpoint_every: 64}") \
    + "  mixtures: [uniform, chameleon_finetune]\n"


@pytest.mark.slow
def test_the_gpu_smoke_script_rehearses_the_whole_graph_on_the_cpu(project: Path, tmp_path: Path) -> None:
    assert f"tokens: {BUDGET}" in REHEARSAL and "tokens: 2048" in REHEARSAL and "tokens: 1024" in REHEARSAL
    (project / "conf" / "profiles" / "rehearsal.yaml").write_text(REHEARSAL)
    for d in ("alpha", "beta", "gamma", "delta"):
        write_domain(project / "raw", d, n_docs=6)
    (project / "conf" / "domains.yaml").write_text(
        "domains:\n" + "".join(f"  - {{name: {d}, source: {project / 'raw' / d / 'documents.jsonl'}}}\n"
                               for d in ("alpha", "beta", "gamma"))
        + f"finetune_domains:\n  - {{name: delta, source: {project / 'raw' / 'delta' / 'documents.jsonl'}}}\n")
    results = tmp_path / "gpu_smoke.json"
    env = {**os.environ, "PROFILE": "rehearsal", "RESULTS": str(results), "SMOKE_DATA": str(tmp_path / "smoke"),
           "VENV": str(Path(sys.executable).parent.parent)}
    run = subprocess.run(["bash", str(REPO / "bench" / "gpu_smoke.sh")], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = json.loads(results.read_text())
    assert out["profile"] == "rehearsal" and out["exit_code"] == 0 and out["run_s"] > 0
    assert {"domain_corpus", "finetune_corpus", "proxy_model", "domain_embeddings", "mixture_weights", "base_model",
            "evaluation", "mixture_comparison", "finetune_weights", "finetuned_model", "finetune_comparison"} \
        <= set(out["steps_by_asset_s"])
    assert sum(s["seconds"] for s in out["steps"]) == pytest.approx(sum(out["steps_by_asset_s"].values()), abs=0.5)
    for asset, partitions in (("proxy_model", ["proxy_model"]), ("base_model", ["chameleon_pretrain|0", "uniform|0"]),
                              ("finetuned_model", ["chameleon_finetune|0", "uniform|0"])):
        assert sorted(out["training"][asset]) == partitions
        for m in out["training"][asset].values():
            assert m["tokens_per_s"] > 0 and m["training_device"] == "cpu"
    assert sorted(out["comparison"]["rows"]) == ["chameleon_pretrain", "uniform"]
    assert out["comparison"]["tasks"] == ["arc_easy_local"]
    assert sorted(out["finetune_comparison"]["rows"]) == ["chameleon_finetune", "uniform"]
    assert out["mlflow_runs"] >= 4
    assert out["environment"]["cpus"] and any(p.startswith("dagster==") for p in out["environment"]["packages"])
    # The repeat warning: uniform reads each domain BUDGET / 3 / (its training tokens) times.
    (line,) = [w for w in out["warnings"] if w.startswith("warning: base_model[uniform]:")]
    train_tokens = {d: m["train_tokens"] for d, m in out["corpus"]["domain_corpus"].items()}
    for domain, epochs in re.findall(r"'(\w+)' ([\d.]+) epochs", line):
        assert float(epochs) == pytest.approx(BUDGET / 3 / train_tokens[domain], abs=0.06)
        assert float(epochs) > 4


def test_the_wall_time_estimate_counts_the_parameters_of_the_models_it_times() -> None:
    """bench/estimate_wall_time.py prices each training by its model's FLOPs per token: its
    parameter count equals that of the model core.model builds (the gpu-paper proxy, ~82M
    with GPT-2's padded vocabulary, and a RegMix swarm model)."""
    sys.path.insert(0, str(REPO / "bench"))
    import estimate_wall_time

    from chameleon_assets.core.model import build_model
    from chameleon_assets.settings import load_profile, method_params

    profile = load_profile("gpu-paper")
    regmix = method_params(profile, "regmix").model
    for config in (profile.proxy.model, regmix):
        model = build_model(config, 50_257, 50_256, 0)
        unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        assert estimate_wall_time.parameters(config) == unique
    assert 81e6 < estimate_wall_time.parameters(profile.proxy.model) < 83e6
