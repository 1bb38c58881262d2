"""Benchmark: training throughput of our loop (``train_causal_lm``) vs. a plain HF ``Trainer``, on CPU.

Both train the same thing: the profile's base model (default ``cpu``: llama, width 128,
4 layers, 4 heads, MLP 512, context 128, an 8k vocabulary), freshly built with the same
seed, for the same number of optimiser steps (``--steps``, default 60) of the same batch
(batch_size x context_length tokens per step) drawn by the same ``WeightedDomainSampler``
over three synthetic domains (200k random token ids each from ``np.random.default_rng(0)``;
no corpus is needed). Same objective too: the HF dataset yields ``input_ids`` = window[:-1]
with ``shift_labels`` = window[1:], so HF's loss is ours (mean cross-entropy over all
batch x seq_len targets) rather than HF's shifted one with one target fewer per row.

The HF side uses our settings where ``TrainingArguments`` has them (lr, warmup, cosine
decay to ``min_lr_ratio * lr``, AdamW betas and weight decay, ``max_grad_norm`` =
``grad_clip``) and HF's defaults elsewhere; in particular its default optimiser
(``adamw_torch_fused`` on torch >= 2.8, where ours is the non-fused AdamW), unless
``--hf-optim`` says otherwise. Each result records which optimiser HF used and whether
its weight-decay groups equal ours (decay on matrices only).

Measured: tokens/s over steps ``--skip``..``--steps`` (default: the first 5 steps, with
their allocator and first-touch costs, are excluded), timed from the start of step
``--skip`` to the return of ``train_causal_lm`` / ``Trainer.train``; the whole-run rate
(from the call to its return, optimiser and dataloader setup included) is stored too.
Every measurement runs in a fresh subprocess with torch pinned to ``--threads`` (default:
the machine's core count); ``--repeats`` (default 3) pairs alternate which loop goes
first. The JSON keeps the median of each and ``ratio_to_hf_trainer`` = ours / HF.

Results go to ``bench/results/train_step.json`` under ``runs[<--label>]``; other labels
already in the file are kept, so a ``before`` and an ``after`` run live side by side.
The code measured is the ``chameleon_assets`` next to this script (its git commit and
whether ``core/train.py`` differs from it are recorded). Run::

    .venv/bin/python bench/bench_train_step.py --label after                          # the profile's precision
    .venv/bin/python bench/bench_train_step.py --label after-float32 --precision float32

``--precision`` sets ``train.precision`` for both loops (HF: ``bf16=True``, its CPU autocast).
``--ab-precision`` measures our loop alone, float32 against bfloat16 in interleaved pairs::

    .venv/bin/python bench/bench_train_step.py --ab-precision --repeats 5 --label precision

``--loss plain`` runs our loop with full logits and ``F.cross_entropy`` (as before
``core.loss``); ``--ab-loss`` measures the fused loss against that in interleaved pairs::

    .venv/bin/python bench/bench_train_step.py --ab-loss --repeats 5 --label fused-loss

``--ab-commit REV`` measures our loop at an earlier commit (checked out in a temporary git
worktree) against the working tree, in interleaved pairs: a change's before and after::

    .venv/bin/python bench/bench_train_step.py --ab-commit cee094f --repeats 3 --label gpu-step-cpu-check

Each result records the CPU (model name, whether it has bfloat16 in hardware): the machine
this project is measured on is not always the same one.

One invocation with the defaults takes about 3 minutes on 2 cores (6 runs of 60 steps, ~25 s each).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # measure the package next to this script (e.g. in a git worktree)
    sys.path.insert(0, str(REPO))

DEFAULT_OUT = REPO / "bench" / "results" / "train_step.json"
DOMAINS = 3
TOKENS_PER_DOMAIN = 200_000
RESULT_PREFIX = "BENCH_RESULT "
LOOPS = ("ours", "hf")


# --- One measurement (runs in its own subprocess) ---------------------------------------

def _setup(args: argparse.Namespace):
    """The profile's base model config, a TrainConfig of exactly ``args.steps`` steps, and the token streams."""
    import dataclasses

    import numpy as np

    from chameleon_assets.core.tokenizer import load_tokenizer
    from chameleon_assets.core.train import total_steps
    from chameleon_assets.settings import load_profile

    profile = load_profile(args.profile)
    model_cfg = profile.base_model.model
    base = profile.base_model.train
    seq_len = model_cfg.context_length
    cfg = dataclasses.replace(base, tokens=args.steps * base.batch_size * base.grad_accum * seq_len,
                              precision=_setup_precision(args))
    assert total_steps(cfg, seq_len) == args.steps, (total_steps(cfg, seq_len), args.steps)
    tok = load_tokenizer(profile.tokenizer)
    vocab = len(tok)
    rng = np.random.default_rng(0)
    streams = {f"domain{i}": rng.integers(0, vocab, size=TOKENS_PER_DOMAIN, dtype=np.uint16) for i in range(DOMAINS)}
    weights = {d: 1.0 / DOMAINS for d in streams}
    return profile, model_cfg, cfg, vocab, tok.eos_token_id, streams, weights


def _rates(step_starts: list[float], t_call: float, t_end: float, steps: int, skip: int, tokens_per_step: int) -> dict:
    skip = min(skip, steps - 1)
    return {
        "tokens_per_s": (steps - skip) * tokens_per_step / (t_end - step_starts[skip]),
        "whole_run_tokens_per_s": steps * tokens_per_step / (t_end - t_call),
        "seconds": t_end - t_call,
    }


def measure_ours(args: argparse.Namespace) -> dict:
    import dataclasses

    import torch

    from chameleon_assets.core.model import build_model, count_parameters
    from chameleon_assets.core.train import WeightedDomainSampler, train_causal_lm

    profile, model_cfg, cfg, vocab, eos, streams, weights = _setup(args)

    class TimedSampler(WeightedDomainSampler):
        """Notes the time of every batch draw: one per micro-batch, at the start of its step."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.draw_times: list[float] = []

        def draw_domains(self, count: int) -> list[str]:
            self.draw_times.append(time.perf_counter())
            return super().draw_domains(count)

    model = build_model(model_cfg, vocab, eos, args.seed)
    sampler = TimedSampler(streams, weights, model_cfg.context_length, args.seed)
    # "plain": the loop as before core.loss, full logits then F.cross_entropy (train.loss: full)
    cfg = dataclasses.replace(cfg, loss="full" if args.loss == "plain" else "chunked")
    t_call = time.perf_counter()
    result = train_causal_lm(model, sampler, cfg, torch.device("cpu"), checkpoint_dir=None, progress=False)
    t_end = time.perf_counter()
    tokens_per_step = cfg.batch_size * cfg.grad_accum * model_cfg.context_length
    assert result.steps == args.steps and len(sampler.draw_times) == args.steps * cfg.grad_accum
    return {
        **_rates(sampler.draw_times[:: cfg.grad_accum], t_call, t_end, args.steps, args.skip, tokens_per_step),
        "mean_loss": sum(result.losses) / len(result.losses),
        "final_loss": result.losses[-1],
        "threads": torch.get_num_threads(),
        "parameters": count_parameters(model),
    }


def measure_hf(args: argparse.Namespace) -> dict:
    import tempfile

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers import logging as hf_logging

    from chameleon_assets.core.model import build_model
    from chameleon_assets.core.train import WeightedDomainSampler

    hf_logging.set_verbosity_error()
    profile, model_cfg, cfg, vocab, eos, streams, weights = _setup(args)
    seq_len = model_cfg.context_length

    class Windows(torch.utils.data.IterableDataset):
        """Our sampler's batches, row by row: the DataLoader regroups them into the same batches."""

        def __init__(self):
            self.sampler = WeightedDomainSampler(streams, weights, seq_len, args.seed)

        def __iter__(self):
            while True:
                for row in self.sampler.next_batch(cfg.batch_size):
                    yield {"input_ids": row[:-1], "labels": row[:-1], "shift_labels": row[1:]}

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.starts: list[float] = []

        def on_step_begin(self, *_, **__):
            self.starts.append(time.perf_counter())

    model = build_model(model_cfg, vocab, eos, args.seed)
    timer = StepTimes()
    with tempfile.TemporaryDirectory() as tmp:
        hf_args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            max_steps=args.steps,
            learning_rate=cfg.lr,
            warmup_steps=cfg.warmup_steps,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_ratio},
            weight_decay=cfg.weight_decay,
            adam_beta1=cfg.beta1,
            adam_beta2=cfg.beta2,
            max_grad_norm=cfg.grad_clip,
            seed=args.seed,
            use_cpu=True,
            bf16=cfg.precision == "bfloat16",  # HF's CPU bf16: autocast around the forward, as ours
            eval_strategy="no",
            save_strategy="no",
            logging_steps=10**9,
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            remove_unused_columns=False,  # keep shift_labels (the model's forward takes it through **kwargs)
            **({"optim": args.hf_optim} if args.hf_optim else {}),
        )
        trainer = Trainer(model=model, args=hf_args, train_dataset=Windows(), callbacks=[timer])
        t_call = time.perf_counter()
        out = trainer.train()
        t_end = time.perf_counter()
    tokens_per_step = cfg.batch_size * cfg.grad_accum * seq_len
    assert trainer.state.global_step == args.steps and len(timer.starts) == args.steps
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # under accelerate's wrapper
    decayed = {id(p) for g in trainer.optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    ours_decayed = {id(p) for p in model.parameters() if p.ndim >= 2}
    return {
        **_rates(timer.starts, t_call, t_end, args.steps, args.skip, tokens_per_step),
        "mean_loss": out.training_loss,
        "threads": torch.get_num_threads(),
        "optim": str(getattr(hf_args.optim, "value", hf_args.optim)),
        "optimizer": f"{type(opt).__name__}(fused={bool(opt.defaults.get('fused'))})",
        "weight_decay_groups_match_ours": decayed == ours_decayed,
    }


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = (measure_ours if args.worker == "ours" else measure_hf)(args)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --- The driver --------------------------------------------------------------------------

def run_one(loop: str, args: argparse.Namespace, precision: str | None = None, loss: str | None = None,
            tree: Path | None = None) -> dict:
    """One measurement of ``loop`` in a fresh interpreter (``precision`` and ``loss`` override
    ``args``), of the code in ``tree`` (another checkout; default the one next to this script)."""
    tree = tree or REPO
    cmd = [sys.executable, str(tree / "bench" / "bench_train_step.py"), "--worker", loop, "--steps", str(args.steps),
           "--skip", str(args.skip), "--threads", str(args.threads), "--seed", str(args.seed),
           "--profile", args.profile, "--loss", loss or args.loss]
    if precision or args.precision:
        cmd += ["--precision", precision or args.precision]
    if args.hf_optim:
        cmd += ["--hf-optim", args.hf_optim]
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
           "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"{loop} measurement failed (exit {proc.returncode})")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def _ab(args: argparse.Namespace, variants: dict[str, dict], what: str, **extra) -> int:
    """Our loop in two ``variants`` (name -> ``run_one`` overrides: ``precision``, ``loss`` or
    ``tree``), ``--repeats`` interleaved pairs, each run in a fresh process (this machine's
    speed drifts by tens of percent within minutes, so only pairs run back to back are
    compared); writes the medians and each pair's ratio ``second / first``."""
    (first, first_kw), (second, second_kw) = variants.items()
    t0 = time.perf_counter()
    runs: dict[str, list[dict]] = {first: [], second: []}
    for r in range(args.repeats):
        for name, kw in [(first, first_kw), (second, second_kw)][:: 1 if r % 2 == 0 else -1]:
            runs[name].append(run_one("ours", args, **kw))
            print(f"pair {r + 1}/{args.repeats} {name}: {runs[name][-1]['tokens_per_s']:,.0f} tokens/s",
                  file=sys.stderr, flush=True)
    pairs = [y["tokens_per_s"] / x["tokens_per_s"] for x, y in zip(runs[first], runs[second])]
    entry = {
        "label": args.label,
        "what": what,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "profile": args.profile,
        "steps": args.steps,
        **extra,
        f"ours_{first}": _summary(runs[first]),
        f"ours_{second}": _summary(runs[second]),
        f"pair_ratios_{second}_to_{first}": [round(x, 3) for x in pairs],
        f"median_ratio_{second}_to_{first}": round(statistics.median(pairs), 3),
        "machine": _machine(args),
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data.setdefault("runs", {})[args.label] = entry
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(entry, indent=2))
    return 0


def _ab_commit(args: argparse.Namespace) -> int:
    """Our loop at commit ``--ab-commit`` (checked out in a temporary git worktree) against
    the code next to this script, in interleaved pairs (``_ab``)."""
    import tempfile

    rev = _git("rev-parse", "--short", args.ab_commit)
    if not rev:
        raise SystemExit(f"--ab-commit: {args.ab_commit!r} is not a commit of {REPO}")
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        tree = Path(tmp) / rev
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        try:
            return _ab(args, {rev: {"tree": tree}, "now": {}},
                       f"train_causal_lm, profile base model: commit {rev} against the working tree of "
                       f"{_git('rev-parse', '--short', 'HEAD')}, interleaved pairs",
                       precision=_setup_precision(args), ours_loss=args.loss)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)


def _setup_precision(args: argparse.Namespace) -> str:
    """The precision both loops run at on this CPU: ``--precision`` or the profile's, resolved
    (``bfloat16_if_native`` is float32 without bf16 hardware)."""
    import torch

    from chameleon_assets.core.model import training_precision
    from chameleon_assets.settings import load_profile

    return training_precision(args.precision or load_profile(args.profile).base_model.train.precision,
                              torch.device("cpu"))


def _machine(args: argparse.Namespace) -> dict:
    """The machine a result was measured on (its CPU model, whether it has bf16 in hardware)."""
    import torch
    import transformers

    from chameleon_assets.core.model import native_bf16

    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "native_bf16": native_bf16(torch.device("cpu")),
            "capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads,
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def _git(*argv: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _summary(runs: list[dict]) -> dict:
    summary = {"median_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in runs), 1),
               "tokens_per_s": [round(r["tokens_per_s"], 1) for r in runs],
               "whole_run_tokens_per_s": [round(r["whole_run_tokens_per_s"], 1) for r in runs],
               "seconds": [round(r["seconds"], 2) for r in runs],
               "mean_loss": [round(r["mean_loss"], 4) for r in runs],
               "threads": runs[0]["threads"]}
    summary.update({k: runs[0][k] for k in ("optim", "optimizer", "weight_decay_groups_match_ours") if k in runs[0]})
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per run (default 60)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop; the median counts (default 3)")
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of tokens/s (default 5)")
    parser.add_argument("--label", default="current", help="key of this result in the output file, e.g. before/after")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file (default {DEFAULT_OUT.relative_to(REPO)})")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: cores)")
    parser.add_argument("--profile", default="cpu", help="profile whose base_model config is trained (default cpu)")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "bfloat16_if_native"), default=None,
                        help="train.precision for both loops (default: the profile's base_model.train.precision)")
    parser.add_argument("--ab-precision", action="store_true",
                        help="instead: our loop in float32 against bfloat16, interleaved pairs (--repeats of each)")
    parser.add_argument("--loss", choices=("fused", "plain"), default="fused",
                        help="our loop's loss: the fused output layer (default, core.loss) or full logits")
    parser.add_argument("--ab-loss", action="store_true",
                        help="instead: our loop with the fused loss against the plain one, interleaved pairs")
    parser.add_argument("--ab-commit", default=None, metavar="REV",
                        help="instead: our loop at commit REV against this working tree, interleaved pairs")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and sampling seed (default 0)")
    parser.add_argument("--hf-optim", default=None,
                        help="TrainingArguments.optim for the HF side (default: HF's own default); "
                             "adamw_torch is the non-fused AdamW ours uses")
    parser.add_argument("--worker", choices=LOOPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps <= args.skip:
        parser.error("--steps must exceed --skip")
    if args.worker:
        worker(args)
        return 0

    from chameleon_assets.settings import load_profile

    if args.ab_precision:
        return _ab(args, {"float32": {"precision": "float32"}, "bfloat16": {"precision": "bfloat16"}},
                   "train_causal_lm, profile base model: train.precision float32 against bfloat16 (CPU autocast, "
                   "attention in float32), interleaved pairs")
    if args.ab_loss:
        return _ab(args, {"plain": {"loss": "plain"}, "fused": {"loss": "fused"}},
                   "train_causal_lm, profile base model: the output layer fused into the cross-entropy (core.loss) "
                   "against full logits + F.cross_entropy, interleaved pairs", precision=_setup_precision(args))
    if args.ab_commit:
        return _ab_commit(args)
    t0 = time.perf_counter()
    results: dict[str, list[dict]] = {loop: [] for loop in LOOPS}
    for r in range(args.repeats):
        for loop in LOOPS if r % 2 == 0 else LOOPS[::-1]:  # alternate which loop runs first
            results[loop].append(run_one(loop, args))
            print(f"repeat {r + 1}/{args.repeats} {loop}: {results[loop][-1]['tokens_per_s']:,.0f} tokens/s",
                  file=sys.stderr, flush=True)
    ours, hf = _summary(results["ours"]), _summary(results["hf"])
    profile = load_profile(args.profile)
    train, model = profile.base_model.train, profile.base_model.model
    entry = {
        "label": args.label,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "train_py_modified_since_commit": bool(_git("status", "--porcelain", "chameleon_assets/core/train.py")),
        "profile": args.profile,
        "model": {"arch": model.arch, "hidden_size": model.hidden_size, "num_layers": model.num_layers,
                  "num_heads": model.num_heads, "intermediate_size": model.intermediate_size},
        "parameters": results["ours"][0]["parameters"],
        "steps": args.steps,
        "steps_excluded_from_tokens_per_s": args.skip,
        "batch_size": train.batch_size,
        "grad_accum": train.grad_accum,
        "seq_len": model.context_length,
        "tokens_per_step": train.batch_size * train.grad_accum * model.context_length,
        "repeats": args.repeats,
        "precision": _setup_precision(args),
        "ours_loss": args.loss,
        "ours": ours,
        "hf_trainer": hf,
        "ratio_to_hf_trainer": round(ours["median_tokens_per_s"] / hf["median_tokens_per_s"], 3),
        "machine": _machine(args),
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data.setdefault("benchmark", "train step: train_causal_lm vs transformers.Trainer (tokens/s, CPU)")
    data.setdefault("runs", {})[args.label] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
