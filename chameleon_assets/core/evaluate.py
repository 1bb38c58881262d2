"""Evaluate a causal LM: held-out perplexity per domain and lm-eval few-shot accuracy.

Perplexity over windows w of L + 1 tokens, predicting tokens 1..L of each:

    NLL = - sum_w sum_{t=1..L} log p(w_t | w_<t)      (nats)
    ppl = exp(NLL / N_tokens)
    bits per byte = (NLL / ln 2) / N_bytes            N_bytes: UTF-8 bytes of the predicted text
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

EVAL_TASKS_DIR = Path(__file__).resolve().parents[1] / "eval_tasks"


def validation_windows(tokens: np.ndarray, num_windows: int, length: int) -> list[np.ndarray]:
    """Up to ``num_windows`` windows of ``length + 1`` tokens at evenly spaced starts.

    Deterministic (no randomness), so every mixture is scored on the same text.
    """
    n = len(tokens)
    span = length + 1
    if n < 2:
        raise ValueError("need at least two validation tokens")
    if n <= span:
        return [np.asarray(tokens, dtype=np.int64)]
    count = min(num_windows, n // span)
    starts = np.linspace(0, n - span, num=max(count, 1)).astype(np.int64)
    return [np.asarray(tokens[s : s + span], dtype=np.int64) for s in starts]


@torch.inference_mode()
def perplexity(
    model: torch.nn.Module,
    windows: Sequence[np.ndarray],
    batch_size: int,
    device: torch.device,
    decode: Callable[[list[int]], str] | None = None,
) -> dict[str, float]:
    """Token-level NLL, perplexity and (with ``decode``) bits per byte over ``windows``."""
    model.to(device).eval()
    nll, count, n_bytes = 0.0, 0, 0
    by_length: dict[int, list[np.ndarray]] = {}
    for w in windows:  # equal-length windows share a batch, so no padding is needed
        by_length.setdefault(len(w), []).append(w)
    for same in by_length.values():
        for i in range(0, len(same), batch_size):
            ids = torch.as_tensor(np.stack(same[i : i + batch_size]), device=device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(input_ids=ids[:, :-1]).logits
            nll += F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
            count += ids[:, 1:].numel()
    if decode is not None:
        n_bytes = sum(len(decode(w[1:].tolist()).encode("utf-8")) for w in windows)
    out = {"nll": nll / count, "perplexity": math.exp(nll / count), "tokens": float(count)}
    if decode is not None and n_bytes:
        out["bits_per_byte"] = nll / math.log(2) / n_bytes
    return out


def within_chance(acc: float, n: int, chance: float, z: float = 1.96) -> bool:
    """Whether an accuracy over ``n`` examples cannot be told apart from guessing.

    A two-sided test of "the model guesses" (normal approximation to the binomial):
    true when ``|acc - chance| <= z * sqrt(chance * (1 - chance) / n)``, the standard
    error under that hypothesis. (The score's own standard error, sqrt(acc (1 - acc) /
    (n - 1)), is 0 at acc = 0 or 1 and would call 0 of 6 "not chance".) With no scored
    example (n < 1) nothing separates the score from a guess: true.
    """
    if n < 1 or math.isnan(acc):
        return True
    return abs(acc - chance) <= z * math.sqrt(chance * (1 - chance) / n)


def _sample_statistics(samples: list[dict], output_type: str | None, filter_key: str) -> dict[str, float]:
    """Per-task figures that lm-eval leaves out when ``bootstrap_iters=0``.

    ``acc_stderr`` and ``acc_norm_stderr`` come from lm-eval's own closed form for a mean,
    ``metrics.mean_stderr`` (sample standard deviation over sqrt(n); for 0/1 scores this is
    sqrt(p (1 - p) / (n - 1))), which it only computes with bootstrapping switched on.
    ``n`` counts the scored examples; ``chance`` is the accuracy of uniform guessing,
    the mean over the scored examples of 1 / (number of choices), for multiple-choice tasks.
    """
    from lm_eval.api.metrics import mean_stderr

    rows = [s for s in samples if s.get("filter", filter_key) == filter_key]
    out: dict[str, float] = {"n": len(rows)}
    for metric in ("acc", "acc_norm"):
        values = [float(s[metric]) for s in rows if isinstance(s.get(metric), (int, float))]
        if values:
            out[f"{metric}_stderr"] = mean_stderr(values) if len(values) > 1 else float("nan")
    if output_type == "multiple_choice" and rows:
        # One loglikelihood request per choice (per context for WinoGrande's partial scoring).
        out["chance"] = float(np.mean([1.0 / len(s["arguments"]) for s in rows]))
    return out


def run_lm_eval(
    model: torch.nn.Module,
    tokenizer,
    tasks: list[str],
    num_fewshot: int,
    limit: int | None,
    batch_size: int,
    max_length: int,
    device: torch.device,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Few-shot accuracy through ``lm_eval.simple_evaluate`` on the in-memory model.

    Task names are looked up in the package's local tasks first (offline), then among
    lm-eval's own. Returns per task ``acc`` and ``acc_norm`` (where the task has them),
    their standard errors ``acc_stderr`` and ``acc_norm_stderr``, the number of scored
    examples ``n`` and, for multiple-choice tasks, the chance level ``chance`` (see
    ``within_chance``). Groups of tasks get only what lm-eval aggregates for them.
    """
    import logging

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from chameleon_assets.eval_tasks.utils import shot_pools

    # lm-eval warns at length about passing an in-memory model and custom datasets: expected here.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    class ClippedHFLM(HFLM):
        """HFLM that scores an answer longer than the model's context on its first
        ``max_length - 1`` tokens (lm-eval asserts instead: a 128-token model meets PIQA
        answers of 150 tokens). The same cut applies to every model of one profile."""

        clipped = 0  # answers cut so far

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):  # noqa: ANN001, ANN202
            keep = self.max_length - 1
            fitted = []
            for key, context, continuation in requests:
                if len(continuation) > keep:
                    continuation = continuation[:keep]
                    self.clipped += 1
                fitted.append((key, context, continuation))
            return super()._loglikelihood_tokens(fitted, disable_tqdm=disable_tqdm, override_bs=override_bs)

    lm = ClippedHFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
                     device=str(device))
    # Indexing lm-eval's ~15,000 built-in task files takes 7-10 s on 2 cores; it is done only
    # when a requested task is not one of the bundled local ones.
    manager = TaskManager(include_path=str(EVAL_TASKS_DIR), include_defaults=False)
    if not set(tasks) <= set(manager.all_tasks):
        manager = TaskManager(include_path=str(EVAL_TASKS_DIR))
    with shot_pools(num_fewshot > 0):
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            # The per-example records give n, the chance level and the standard errors; the
            # bootstrap (which would give only the latter) stays off as it is slow for
            # metrics without a closed form.
            log_samples=True,
            bootstrap_iters=0,
        )
    if lm.clipped:
        logging.getLogger("chameleon.evaluate").warning(
            f"{lm.clipped} answer(s) longer than the model's context ({max_length} tokens) were scored on "
            f"their first {max_length - 1} tokens")
    samples = results.get("samples", {})
    scores: dict[str, dict[str, float]] = {}
    for task, metrics in results["results"].items():
        scores[task] = {}
        filter_key = "none"
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if name in ("acc", "acc_norm") and isinstance(value, (int, float)):
                scores[task][name] = float(value)
                filter_key = filt or filter_key
        if task in samples:
            output_type = results.get("configs", {}).get(task, {}).get("output_type")
            scores[task].update(_sample_statistics(samples[task], output_type, filter_key))
    return scores
