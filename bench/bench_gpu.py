"""Benchmark: the training step and the embedder on a GPU, against a stock HF ``Trainer`` and
a plain PyTorch GPT-2, on whatever CUDA device is present.

What is measured (each loop in a fresh process, one after the other):

* ``ours``: ``core.train.train_causal_lm`` on the ``gpu`` profile's base model
  (conf/profiles/gpu.yaml: GPT-2, 12 layers, width 768, context 512, the 50,257-token
  vocabulary padded as the profile says), its batch (32 x grad_accum 4), bf16 autocast,
  ``torch.compile``, the loss ``train.loss: auto`` picks on the device;
* ``ours-eager``: the same without ``torch.compile``;
* ``ours-chunked``: compiled, with the CPU's chunked fused loss (``train.loss: chunked``):
  the per-device choice of ``core.loss.AUTO_LOSS``, measured;
* ``hf-trainer``: HF ``Trainer`` on the same model, batch, data and schedule (bf16,
  ``torch_compile``, ``adamw_torch_fused``, pinned memory);
* ``reference``: ``bench/gpt2_reference.py``, a plain PyTorch GPT-2 of the same shape
  (SDPA causal attention, tied head, fused AdamW, compiled), in a nanoGPT-style loop;
* ``proxy``: ours on the profile's proxy (6 layers);
* ``losses``: each loss alone (forward and backward on the base model's last hidden
  states: chunked, full, full compiled, and Liger Kernel's fused linear cross-entropy
  when ``liger_kernel`` is installed), time, peak memory and agreement with a float32
  full-logit reference;
* ``embedder``: ``core.embed.embed_windows`` on the proxy (float32 and bfloat16) against
  the reference routine (a full forward pass with every hidden state, float32): time
  and agreement (largest difference, smallest cosine).

Every loop draws the same batches (``WeightedDomainSampler`` over three synthetic
domains, seed 0) into the same initial weights. Timing: the steady steps between
``--skip`` and ``--steps``, outside the loop: the device is synchronised when step
``--skip`` and the last step end, and tokens/s = tokens of those steps / seconds between.
Ours also reports its own figure (``StepClock``); both are kept, with their ratio. MFU =
(6 N + 6 L n_ctx d) x tokens/s / the device's peak, measured with a bf16 matrix product
(``core.cost.device_peak``; the data sheet's value is recorded beside it).

It imports only the package's core (no Dagster, MLflow, lm-eval or pydantic), so it runs
on a bare GPU machine with torch and transformers (and pyyaml, which transformers needs).
Results go to ``bench/results/gpu.json`` under ``runs[<--label>]`` with the device, the
library versions and the measured peak. Run::

    python bench/bench_gpu.py --label h200              # about 6 minutes on one H200
    python bench/bench_gpu.py --only ours,reference     # a subset
    python bench/bench_gpu.py --cpu-smoke --out /tmp/gpu.json   # tiny model, CPU, in-process (make test)
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
for entry in (str(REPO), str(REPO / "bench")):
    if entry not in sys.path:  # the package next to this script, and gpt2_reference beside it
        sys.path.insert(0, entry)

DEFAULT_OUT = REPO / "bench" / "results" / "gpu.json"
RESULT_PREFIX = "BENCH_RESULT "
LOOPS = ("ours", "ours-eager", "ours-chunked", "hf-trainer", "reference", "proxy", "losses", "embedder")
GPT2_VOCAB = 50_257
DOMAINS = 3
TOKENS_PER_DOMAIN = 2_000_000

# --cpu-smoke: the same code paths on a model small enough for a test on two cores.
SMOKE_MODEL = {"arch": "gpt2", "hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 256,
               "context_length": 32, "vocab_multiple": 64}
SMOKE_TRAIN = {"batch_size": 4, "grad_accum": 2, "lr": 1e-3, "warmup_steps": 2}
SMOKE_VOCAB = 300


# --- The setup every loop shares ------------------------------------------------------------

def _setup(args: argparse.Namespace, which: str = "base_model"):
    """(model config, train config of exactly ``args.steps`` steps, vocabulary, token streams)
    of the ``gpu`` profile's ``which`` model (``base_model`` or ``proxy``), or the smoke model."""
    import dataclasses

    import numpy as np
    import yaml

    from chameleon_assets.core.model import ModelConfig
    from chameleon_assets.core.train import TrainConfig

    if args.cpu_smoke:
        model_cfg = ModelConfig(**SMOKE_MODEL)
        train = TrainConfig(**SMOKE_TRAIN, precision="float32", compile=False)
        vocab, tokens_per_domain = SMOKE_VOCAB, 20_000
    else:
        profile = yaml.safe_load((REPO / "conf" / "profiles" / f"{args.profile}.yaml").read_text())
        model_cfg = ModelConfig(**profile[which]["model"])
        train = TrainConfig(**profile[which]["train"])
        vocab, tokens_per_domain = args.vocab, TOKENS_PER_DOMAIN
    seq_len = model_cfg.context_length
    cfg = dataclasses.replace(train, tokens=args.steps * train.batch_size * train.grad_accum * seq_len,
                              checkpoint_every=10**9)
    rng = np.random.default_rng(0)
    dtype = np.uint16 if vocab <= 1 << 16 else np.uint32
    streams = {f"domain{i}": rng.integers(0, vocab, size=tokens_per_domain, dtype=dtype) for i in range(DOMAINS)}
    return model_cfg, cfg, vocab, streams


def _device():  # noqa: ANN202 (torch.device)
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device) -> None:  # noqa: ANN001
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device) -> None:  # noqa: ANN001
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_gib(device) -> float | None:  # noqa: ANN001
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def _rate(t_skip: float, t_end: float, args: argparse.Namespace, cfg, seq_len: int) -> float:  # noqa: ANN001
    return (args.steps - args.skip) * cfg.batch_size * cfg.grad_accum * seq_len / (t_end - t_skip)


def _mfu(flops_per_token: float, tokens_per_s: float) -> float:
    """Against the peak of the loops' precision: bf16 on a GPU, float32 in the CPU smoke run."""
    from chameleon_assets.core.cost import device_peak

    device = _device()
    return flops_per_token * tokens_per_s / device_peak(device, bf16=device.type == "cuda").flops


# --- One loop each ----------------------------------------------------------------------------

def measure_ours(args: argparse.Namespace, which: str = "base_model", compile_: bool | None = None,
                 loss: str = "auto") -> dict:
    """``train_causal_lm`` as the pipeline runs it; outside timing from its ``on_step`` calls,
    which come right after it read the losses from the device (a synchronisation)."""
    import dataclasses

    from chameleon_assets.core.cost import model_train_flops_per_token
    from chameleon_assets.core.model import build_model, count_parameters
    from chameleon_assets.core.train import LOG_EVERY, WeightedDomainSampler, train_causal_lm

    if args.skip % LOG_EVERY or args.steps % LOG_EVERY:
        raise SystemExit(f"--skip and --steps must be multiples of {LOG_EVERY} (when ours reads its losses)")
    model_cfg, cfg, vocab, streams = _setup(args, which)
    cfg = dataclasses.replace(cfg, loss=loss, **({} if compile_ is None else {"compile": compile_}))
    device = _device()
    model = build_model(model_cfg, vocab, 0, args.seed)
    sampler = WeightedDomainSampler(streams, dict.fromkeys(streams, 1.0), model_cfg.context_length, args.seed)
    seen: dict[int, float] = {}

    def on_step(step: int, _loss: float, _rate: float) -> None:
        seen[step] = time.perf_counter()

    _reset_memory(device)
    result = train_causal_lm(model, sampler, cfg, device, on_step=on_step, progress=False)
    rate = _rate(seen[args.skip], seen[args.steps], args, cfg, model_cfg.context_length)
    flops = model_train_flops_per_token(model, model_cfg.context_length)
    extra = result.extra
    return {
        "tokens_per_s": rate, "mfu": _mfu(flops, rate),
        "reported_tokens_per_s": result.tokens_per_s, "reported_mfu": extra["mfu"],
        "reported_to_outside": result.tokens_per_s / rate,
        "first_step_s": extra["first_step_s"], "warmup_s": extra["warmup_s"],
        "loss": extra["loss"], "compiled": extra["compiled"], "precision": extra["precision"],
        "final_loss": result.losses[-1], "parameters": count_parameters(model), "vocab_rows": model.config.vocab_size,
        "flops_per_token": flops, "peak_memory_gib": _peak_memory_gib(device),
        "batch": [cfg.batch_size, cfg.grad_accum, model_cfg.context_length],
    }


def measure_hf(args: argparse.Namespace) -> dict:
    """HF ``Trainer`` on the same model, batches and schedule; timed by a callback that
    synchronises the device at the end of step ``--skip`` and of the last step."""
    import tempfile

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers import logging as hf_logging

    from chameleon_assets.core.cost import model_train_flops_per_token
    from chameleon_assets.core.model import build_model
    from chameleon_assets.core.train import WeightedDomainSampler

    hf_logging.set_verbosity_error()
    model_cfg, cfg, vocab, streams = _setup(args)
    seq_len = model_cfg.context_length
    device = _device()

    class Windows(torch.utils.data.IterableDataset):
        """Our sampler's batches, row by row (the DataLoader regroups them into the same
        batches); labels shifted by hand so that HF's loss is ours, over all seq_len targets."""

        def __init__(self):
            self.sampler = WeightedDomainSampler(streams, dict.fromkeys(streams, 1.0), seq_len, args.seed)

        def __iter__(self):
            while True:
                for row in self.sampler.next_batch(cfg.batch_size):
                    yield {"input_ids": row[:-1], "labels": row[:-1], "shift_labels": row[1:]}

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times: dict[int, float] = {}

        def on_step_end(self, _args, state, *_, **__):
            if state.global_step in (args.skip, args.steps):
                _sync(device)
                self.times[state.global_step] = time.perf_counter()

    model = build_model(model_cfg, vocab, 0, args.seed)
    timer = StepTimes()
    on_gpu = device.type == "cuda"
    _reset_memory(device)
    with tempfile.TemporaryDirectory() as tmp:
        hf_args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
            max_steps=args.steps, learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps,
            lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_ratio},
            weight_decay=cfg.weight_decay, adam_beta1=cfg.beta1, adam_beta2=cfg.beta2, max_grad_norm=cfg.grad_clip,
            seed=args.seed, use_cpu=not on_gpu, bf16=on_gpu, torch_compile=on_gpu and cfg.compile,
            optim="adamw_torch_fused" if on_gpu else "adamw_torch",
            eval_strategy="no", save_strategy="no", logging_steps=10**9, report_to=[], disable_tqdm=True,
            dataloader_num_workers=0, dataloader_pin_memory=on_gpu,
            remove_unused_columns=False,  # keep shift_labels (the model's forward takes it through **kwargs)
        )
        trainer = Trainer(model=model, args=hf_args, train_dataset=Windows(), callbacks=[timer])
        out = trainer.train()
    rate = _rate(timer.times[args.skip], timer.times[args.steps], args, cfg, seq_len)
    flops = model_train_flops_per_token(model, seq_len)
    return {"tokens_per_s": rate, "mfu": _mfu(flops, rate), "mean_loss": out.training_loss,
            "compiled": bool(hf_args.torch_compile), "optim": str(getattr(hf_args.optim, "value", hf_args.optim)),
            "peak_memory_gib": _peak_memory_gib(device)}


def measure_reference(args: argparse.Namespace) -> dict:
    """The plain PyTorch GPT-2 in a nanoGPT-style loop: same batches (drawn in the loop,
    pinned, copied without blocking), bf16 autocast, fused AdamW, the same schedule and
    clipping, compiled as the profile says."""
    import math

    import torch

    import gpt2_reference
    from chameleon_assets.core.cost import train_flops_per_token
    from chameleon_assets.core.model import count_parameters, padded_vocab
    from chameleon_assets.core.train import WeightedDomainSampler, lr_at, make_optimizer

    model_cfg, cfg, vocab, streams = _setup(args)
    device = _device()
    torch.manual_seed(args.seed)
    model = gpt2_reference.GPT2(padded_vocab(vocab, model_cfg.vocab_multiple), model_cfg.context_length,
                                model_cfg.hidden_size, model_cfg.num_layers, model_cfg.num_heads,
                                model_cfg.intermediate_size).to(device)
    opt = make_optimizer(model, cfg, fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg, args.steps) / cfg.lr)
    step_loss = torch.compile(gpt2_reference.loss) if cfg.compile else gpt2_reference.loss
    sampler = WeightedDomainSampler(streams, dict.fromkeys(streams, 1.0), model_cfg.context_length, args.seed)
    use_bf16 = device.type == "cuda"
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    times: dict[int, float] = {}
    _reset_memory(device)
    for step in range(1, args.steps + 1):
        opt.zero_grad(set_to_none=True)
        for _ in range(cfg.grad_accum):
            batch = sampler.next_batch(cfg.batch_size)
            batch = (batch.pin_memory() if device.type == "cuda" else batch).to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = step_loss(model, batch[:, :-1], batch[:, 1:])
            (loss / cfg.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if step in (args.skip, args.steps):
            _sync(device)
            times[step] = time.perf_counter()
    rate = _rate(times[args.skip], times[args.steps], args, cfg, model_cfg.context_length)
    n = count_parameters(model)
    flops = train_flops_per_token(n, model_cfg.num_layers, model_cfg.context_length, model_cfg.hidden_size)
    final = float(loss.detach())
    assert math.isfinite(final)
    return {"tokens_per_s": rate, "mfu": _mfu(flops, rate), "final_loss": final, "parameters": n,
            "compiled": bool(cfg.compile), "peak_memory_gib": _peak_memory_gib(device)}


def measure_losses(args: argparse.Namespace) -> dict:
    """Each loss alone, forward and backward, on (batch x context) rows of the base model's
    width against its output layer: milliseconds (median of 10 after 3 warm-ups), peak
    memory, and the loss and gradients against a float32 full-logit reference."""
    import torch
    import torch.nn.functional as F

    from chameleon_assets.core.loss import fused_linear_cross_entropy
    from chameleon_assets.core.model import padded_vocab

    model_cfg, cfg, vocab, _ = _setup(args)
    device = _device()
    rows, width = cfg.batch_size * model_cfg.context_length, model_cfg.hidden_size
    g = torch.Generator(device="cpu").manual_seed(0)
    hidden = torch.randn(rows, width, generator=g).to(device)
    weight = (0.02 * torch.randn(padded_vocab(vocab, model_cfg.vocab_multiple), width, generator=g)).to(device)
    targets = torch.randint(0, vocab, (rows,), generator=g).to(device)
    use_bf16 = device.type == "cuda"

    def full(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy((h @ w.T).float(), t)

    candidates = {"chunked": fused_linear_cross_entropy, "full": full}
    skipped = {}
    if args.cpu_smoke:  # compiling on the CPU takes longer than the whole smoke run
        skipped["full-compiled"] = "not compiled in --cpu-smoke"
    else:
        candidates["full-compiled"] = torch.compile(full)
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()
        candidates["liger"] = lambda h, w, t: liger(w, h, t)
    except ImportError as exc:
        skipped["liger"] = f"not installed ({exc})"

    def run(fn, autocast: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: ANN001
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            value = fn(h, w, targets)
        value.backward()
        return value.detach().float(), h.grad, w.grad

    ref_loss, ref_h, ref_w = run(full, autocast=False)
    out: dict = {"rows": rows, "width": width, "vocab_rows": weight.shape[0], "skipped": skipped}
    for name, fn in candidates.items():
        try:
            for _ in range(3):
                run(fn, use_bf16)
            _sync(device)
            _reset_memory(device)
            times = []
            for _ in range(10):
                t0 = time.perf_counter()
                value, gh, gw = run(fn, use_bf16)
                _sync(device)
                times.append(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run here is reported, not fatal
            out["skipped"][name] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        out[name] = {"ms": round(1e3 * statistics.median(times), 3), "peak_memory_gib": _peak_memory_gib(device),
                     "loss_abs_diff": float((value - ref_loss).abs()),
                     "grad_hidden_rel_diff": float((gh.float() - ref_h).norm() / ref_h.norm()),
                     "grad_weight_rel_diff": float((gw.float() - ref_w).norm() / ref_w.norm())}
    return out


def measure_embedder(args: argparse.Namespace) -> dict:
    """``embed_windows`` (float32 and bfloat16) against the reference routine on the proxy."""
    import numpy as np
    import torch

    from chameleon_assets.core.embed import embed_windows, mean_pool, middle_layer
    from chameleon_assets.core.model import build_model

    model_cfg, _, vocab, streams = _setup(args, "proxy")
    device = _device()
    count, length, batch = (32, 16, 8) if args.cpu_smoke else (2048, 512, 64)
    model = build_model(model_cfg, vocab, 0, args.seed).to(device).eval()
    rng = np.random.default_rng(0)
    stream = streams["domain0"]
    starts = rng.integers(0, len(stream) - length, size=count)
    windows = [np.asarray(stream[s:s + length], dtype=np.int64) for s in starts]

    @torch.inference_mode()
    def reference() -> np.ndarray:
        """Every hidden state in float32, the middle one mean-pooled (the authors' routine)."""
        out = []
        for i in range(0, count, batch):
            ids = torch.as_tensor(np.stack(windows[i:i + batch]), device=device)
            mask = torch.ones_like(ids)
            states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            out.append(mean_pool(states[middle_layer(model_cfg.num_layers)].float(), mask).cpu())
        return torch.cat(out).numpy()

    def timed(fn):  # noqa: ANN001, ANN202
        fn()  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        value = fn()
        _sync(device)
        return value, time.perf_counter() - t0

    expected, t_ref = timed(reference)
    out = {"windows": count, "length": length, "batch": batch, "reference_s": round(t_ref, 4)}
    for dtype in ("float32", "bfloat16"):
        got, t = timed(lambda d=dtype: embed_windows(model, windows, batch, 0, device, dtype=d))
        cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
        out[dtype] = {"s": round(t, 4), "speedup": round(t_ref / t, 2), "max_abs_diff": float(np.abs(got - expected).max()),
                      "min_cosine": float(cosine.min())}
    return out


MEASURES = {
    "ours": lambda a: measure_ours(a),
    "ours-eager": lambda a: measure_ours(a, compile_=False),
    "ours-chunked": lambda a: measure_ours(a, loss="chunked"),
    "hf-trainer": measure_hf,
    "reference": measure_reference,
    "proxy": lambda a: measure_ours(a, "proxy"),
    "losses": measure_losses,
    "embedder": measure_embedder,
}


def worker(args: argparse.Namespace) -> None:
    print(RESULT_PREFIX + json.dumps(MEASURES[args.worker](args)), flush=True)


# --- The driver ----------------------------------------------------------------------------

def run_one(loop: str, args: argparse.Namespace) -> dict:
    """``loop`` in a fresh interpreter (each compiles and allocates from a clean slate), or in
    this one under ``--cpu-smoke``. A loop that fails is recorded with its error."""
    t0 = time.perf_counter()
    try:
        if args.cpu_smoke:
            result = MEASURES[loop](args)
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", loop, "--steps", str(args.steps),
                   "--skip", str(args.skip), "--seed", str(args.seed), "--profile", args.profile,
                   "--vocab", str(args.vocab)]
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
            result = json.loads(lines[-1][len(RESULT_PREFIX):])
    except Exception as exc:  # noqa: BLE001 - one failed loop must not lose the others' results
        if args.cpu_smoke:
            raise
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"{loop}: " + (result.get("error") or f"{result.get('tokens_per_s', 0):,.0f} tokens/s"
                         if "tokens_per_s" in result or "error" in result else "done"), file=sys.stderr, flush=True)
    return result


def environment() -> dict:
    """The device, its measured and data-sheet peaks, and the library versions."""
    import torch
    import transformers

    from chameleon_assets.core.cost import datasheet_peak_flops, device_peak

    device = _device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = device_peak(device, bf16=device.type == "cuda")
    env = {"device": name, "device_type": device.type, "peak_flops": peak.flops, "peak_source": peak.source,
           "datasheet_peak_flops": datasheet_peak_flops(name) if device.type == "cuda" else None,
           "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
           "python": platform.python_version(), "cpus": os.cpu_count()}
    if device.type == "cuda":
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        env["memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        env["liger_kernel"] = version("liger-kernel")
    except PackageNotFoundError:
        env["liger_kernel"] = None
    return env


def summarise(results: dict) -> dict:
    """Ours against HF Trainer and the plain reference: the ratios issue 27 sets targets for."""
    def rate(name: str) -> float | None:
        return results.get(name, {}).get("tokens_per_s")

    out = {}
    for mine in ("ours", "ours-eager", "ours-chunked"):
        for other in ("hf-trainer", "reference"):
            if rate(mine) and rate(other):
                out[f"{mine}_to_{other}"] = round(rate(mine) / rate(other), 3)
    if "ours" in results and "reported_to_outside" in results["ours"]:
        out["ours_reported_to_outside"] = round(results["ours"]["reported_to_outside"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(LOOPS), help=f"comma-separated subset of {','.join(LOOPS)}")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per loop (default 50; smoke 20)")
    parser.add_argument("--skip", type=int, default=None, help="steps before the timed window (default 20; smoke 10)")
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--vocab", type=int, default=GPT2_VOCAB, help="tokenizer size (GPT-2's by default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default=None, help="key under runs in the results file (default: the device)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cpu-smoke", action="store_true", help="a tiny model on the CPU, in this process")
    parser.add_argument("--worker", choices=LOOPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = args.steps or (20 if args.cpu_smoke else 50)
    args.skip = args.skip if args.skip is not None else (10 if args.cpu_smoke else 20)
    if not 0 < args.skip < args.steps:
        parser.error("need 0 < --skip < --steps")
    if args.worker:
        worker(args)
        return 0
    loops = [x for x in args.only.split(",") if x]
    unknown = sorted(set(loops) - set(LOOPS))
    if unknown:
        parser.error(f"unknown loop(s) {', '.join(unknown)}; known: {', '.join(LOOPS)}")
    t0 = time.perf_counter()
    env = environment()
    if not args.cpu_smoke and env["device_type"] != "cuda":
        parser.error("no CUDA device here; --cpu-smoke runs the benchmark's code paths on a tiny model")
    results = {loop: run_one(loop, args) for loop in loops}
    entry = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": _git("rev-parse", "--short", "HEAD"),
             "mode": "cpu-smoke" if args.cpu_smoke else "gpu", "profile": args.profile, "steps": args.steps,
             "timed_steps": [args.skip + 1, args.steps], "environment": env, "results": results,
             "summary": summarise(results), "elapsed_s": round(time.perf_counter() - t0, 1)}
    label = args.label or ("cpu-smoke" if args.cpu_smoke else env["device"])
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data.setdefault("runs", {})[label] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps({"label": label, "summary": entry["summary"]}, indent=2))
    failed = [loop for loop, r in results.items() if "error" in r]
    return 1 if failed else 0


def _git(*argv: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


if __name__ == "__main__":
    sys.exit(main())
