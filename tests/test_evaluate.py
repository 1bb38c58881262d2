"""Perplexity and the local lm-eval tasks."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from chameleon_assets.core.evaluate import perplexity, run_lm_eval, validation_windows


class UniformLogits(torch.nn.Module):
    """A 'model' whose next-token distribution is uniform over the vocabulary."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids: torch.Tensor):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_uniform_logits_have_perplexity_equal_to_the_vocabulary_size() -> None:
    windows = validation_windows(np.arange(500) % 37, num_windows=4, length=16)
    out = perplexity(UniformLogits(37), windows, batch_size=2, device=torch.device("cpu"))
    assert out["perplexity"] == pytest.approx(37.0, rel=1e-6)
    assert out["tokens"] == 4 * 16


def test_bits_per_byte_is_nll_in_bits_over_predicted_bytes() -> None:
    # Each predicted token decodes to 2 bytes: bpb = log2(V) / 2 for uniform logits.
    windows = [np.arange(9)]
    out = perplexity(UniformLogits(16), windows, 1, torch.device("cpu"), decode=lambda ids: "ab" * len(ids))
    assert out["bits_per_byte"] == pytest.approx(math.log2(16) / 2)


def test_validation_windows_are_deterministic_and_fit() -> None:
    a = validation_windows(np.arange(1000), 5, 99)
    assert [w[0] for w in a] == [0, 225, 450, 675, 900] and all(len(w) == 100 for w in a)
    assert len(validation_windows(np.arange(50), 5, 99)[0]) == 50


def test_local_tasks_map_data_to_the_right_answers() -> None:
    from chameleon_assets.eval_tasks.utils import load

    arc = load("arc_easy")["validation"][0]
    assert arc["choices"][arc["gold"]] == "cellular telephone"  # answerKey 'A' of the first ARC-Easy item
    copa = load("copa")["validation"][0]
    assert copa["query"] == "The man turned on the faucet therefore"
    assert copa["choices"][copa["gold"]] == "water flowed from the spout."
    wino = load("winogrande")["validation"][0]
    assert wino["choices"][wino["gold"]].endswith("so Maria") and wino["continuation"] == "always got the easier cases."


@pytest.mark.slow
def test_local_lm_eval_tasks_run_end_to_end_on_a_tiny_model() -> None:
    from chameleon_assets.core.model import build_model
    from chameleon_assets.core.tokenizer import load_tokenizer
    from chameleon_assets.settings import ModelConfig

    tok = load_tokenizer("bpe-8k")
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context_length=128)
    model = build_model(cfg, len(tok), tok.eos_token_id, 0).eval()
    scores = run_lm_eval(model, tok, ["arc_easy_local", "winogrande_local"], 1, 6, 8, 128, torch.device("cpu"))
    assert set(scores) == {"arc_easy_local", "winogrande_local"}
    for task, m in scores.items():
        assert 0.0 <= m["acc"] <= 1.0 and m["acc"] * 6 == pytest.approx(round(m["acc"] * 6)), task


def test_batched_perplexity_equals_one_window_at_a_time() -> None:
    from chameleon_assets.core.model import build_model
    from chameleon_assets.settings import ModelConfig

    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context_length=32)
    model = build_model(cfg, vocab_size=50, eos_id=0, seed=0)
    windows = validation_windows(np.arange(400) % 50, num_windows=6, length=16) + [np.arange(1, 9)]
    one = perplexity(model, windows, batch_size=1, device=torch.device("cpu"))
    many = perplexity(model, windows, batch_size=4, device=torch.device("cpu"))
    assert many["tokens"] == one["tokens"] == 6 * 16 + 7
    assert many["perplexity"] == pytest.approx(one["perplexity"], rel=1e-5)
