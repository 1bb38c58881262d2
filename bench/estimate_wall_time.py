"""How long a profile's graph takes on one GPU, from the speeds a GPU smoke run measured.

Every training's time is its tokens x its model's training FLOPs per token (6 N + 6 L n_ctx d,
``core.cost``) over the FLOP/s the smoke run achieved on a model of the same size (gpu-smoke's
proxy and base models have gpu-paper's shapes); models of other sizes (RegMix's swarm) are
taken at the proxy's FLOP/s. Embedding passes count a third of a training token each.
Evaluation is the smoke's seconds per evaluated model, scaled by the examples scored. The
smoke trains eagerly (no torch.compile) and the paper profile compiles, so the estimate
errs long.

    python bench/estimate_wall_time.py [--profile gpu-paper] [--smoke bench/results/gpu_smoke.json] [--domains 7]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GPT2_VOCAB = 50_257
# Examples each local task scores with limit null (chameleon_assets/eval_tasks/README.md).
TASK_EXAMPLES = {"arc_easy_local": 570, "arc_challenge_local": 299, "piqa_local": 1838, "hellaswag_local": 10042,
                 "copa_local": 90, "winogrande_local": 1267, "sciq_local": 900, "openbookqa_local": 500}


def parameters(model, vocab: int = GPT2_VOCAB) -> int:  # noqa: ANN001 (core.config.ModelConfig)
    """Unique parameters of a model built from ``model`` (tied embeddings): embeddings,
    positions (gpt2), the blocks and the final norm."""
    from chameleon_assets.core.cost import layer_parameters

    rows = math.ceil(vocab / model.vocab_multiple) * model.vocab_multiple
    positions = model.context_length * model.hidden_size if model.arch == "gpt2" else 0
    norm = 2 * model.hidden_size if model.arch == "gpt2" else model.hidden_size
    return rows * model.hidden_size + positions + model.num_layers * layer_parameters(
        model.arch, model.hidden_size, model.intermediate_size) + norm


def flops_per_token(model) -> float:  # noqa: ANN001
    from chameleon_assets.core.cost import train_flops_per_token

    return train_flops_per_token(parameters(model), model.num_layers, model.context_length, model.hidden_size)


def achieved(smoke: dict, asset: str, model) -> float:  # noqa: ANN001
    """FLOP/s the smoke's ``asset`` trainings achieved (their median tokens/s x FLOPs per token)."""
    rates = sorted(m["tokens_per_s"] for m in smoke["training"][asset].values() if m.get("tokens_per_s"))
    if not rates:
        raise SystemExit(f"the smoke run recorded no {asset} tokens/s")
    return rates[len(rates) // 2] * flops_per_token(model)


def estimate(profile, smoke: dict, domains: int, finetune_domains: int) -> list[dict]:  # noqa: ANN001
    from chameleon_assets.settings import method_params

    proxy_rate = achieved(smoke, "proxy_model", profile.proxy.model)
    base_rate = achieved(smoke, "base_model", profile.base_model.model)
    seeds, mixtures = len(profile.seeds), profile.base_model.mixtures
    rows = [{"stage": "proxy_model", "tokens": profile.proxy.train.tokens, "model": profile.proxy.model,
             "rate": proxy_rate}]
    if "doremi" in mixtures:  # a reference and a Group-DRO proxy of the proxy's size and budget
        rows.append({"stage": "doremi_weights", "tokens": 2 * profile.proxy.train.tokens, "model": profile.proxy.model,
                     "rate": proxy_rate})
    if "doge" in mixtures:
        rows.append({"stage": "doge_weights", "tokens": profile.proxy.train.tokens, "model": profile.proxy.model,
                     "rate": proxy_rate})
    if "regmix" in mixtures:
        regmix = method_params(profile, "regmix")
        rows.append({"stage": "regmix_run (swarm)", "tokens": regmix.runs * regmix.train.tokens, "model": regmix.model,
                     "rate": proxy_rate})
    embed = (domains + finetune_domains) * profile.embedding.num_samples * profile.embedding.sample_length
    rows.append({"stage": "domain_embeddings", "tokens": embed / 3, "model": profile.proxy.model, "rate": proxy_rate})
    rows.append({"stage": "base_model", "tokens": len(mixtures) * seeds * profile.base_model.train.tokens,
                 "model": profile.base_model.model, "rate": base_rate})
    if finetune_domains:
        rows.append({"stage": "finetuned_model", "tokens": len(profile.finetune.mixtures) * seeds
                     * profile.finetune.train.tokens, "model": profile.base_model.model, "rate": base_rate})
    out = []
    for row in rows:
        flops = row["tokens"] * flops_per_token(row["model"])
        out.append({"stage": row["stage"], "tokens": int(row["tokens"]), "flops": flops,
                    "hours": flops / row["rate"] / 3600})
    smoke_evals = [s["seconds"] for s in smoke.get("steps", []) if s["asset"] in ("evaluation", "finetune_evaluation")]
    if smoke_evals:
        smoke_profile_examples = sum(min(TASK_EXAMPLES.get(t, 0), 100) for t in smoke["comparison"].get("tasks", []))
        examples = sum(TASK_EXAMPLES.get(t, 0) for t in profile.evaluation.tasks) * (1 + profile.evaluation.num_fewshot)
        per_model = sum(smoke_evals) / len(smoke_evals) * max(examples, 1) / max(smoke_profile_examples, 1)
        models = len(mixtures) * seeds + (len(profile.finetune.mixtures) * seeds if finetune_domains else 0)
        out.append({"stage": "evaluation (lm-eval + perplexity)", "tokens": 0, "flops": 0.0,
                    "hours": per_model * models / 3600})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="gpu-paper")
    parser.add_argument("--smoke", default=str(REPO / "bench" / "results" / "gpu_smoke.json"))
    parser.add_argument("--domains", type=int, default=7, help="pretraining domains (SlimPajama: 7)")
    parser.add_argument("--finetune-domains", type=int, default=4)
    args = parser.parse_args()

    from chameleon_assets.settings import load_profile

    smoke_file = Path(args.smoke)
    if not smoke_file.is_file():
        raise SystemExit(f"{smoke_file} is missing: run bench/gpu_smoke.sh on a GPU first")
    smoke = json.loads(smoke_file.read_text())
    if smoke["environment"].get("gpus", 0) < 1:
        print(f"note: {smoke_file} was measured without a GPU ({smoke['profile']}); the estimate is not a GPU's")
    rows = estimate(load_profile(args.profile), smoke, args.domains, args.finetune_domains)
    gpu = smoke["environment"].get("gpu", "no GPU")
    print(f"{args.profile} on one {gpu}, at the speeds of {smoke_file.name} (profile {smoke['profile']}):")
    for r in rows:
        print(f"  {r['stage']:36s} {r['tokens']:>16,} tokens {r['flops']:10.3g} FLOPs {r['hours']:8.2f} h")
    print(f"  {'total':36s} {'':>16s}        {'':10s}       {sum(r['hours'] for r in rows):8.2f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
