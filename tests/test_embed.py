"""The embedder: middle-layer truncation, padding invariance, window sampling."""

import numpy as np
import pytest
import torch

from chameleon_assets.core.embed import (
    decoder_layers,
    embed_windows,
    middle_layer,
    middle_layer_states,
    sample_windows,
)
from chameleon_assets.core.model import build_model
from chameleon_assets.settings import ModelConfig

CPU = torch.device("cpu")


@pytest.mark.parametrize(("arch", "layers"), [("llama", 4), ("llama", 5), ("gpt2", 6)])
def test_truncated_forward_equals_full_forward_at_the_middle_index(arch: str, layers: int) -> None:
    cfg = ModelConfig(arch=arch, hidden_size=32, num_layers=layers, num_heads=2, intermediate_size=64, context_length=32)
    model = build_model(cfg, vocab_size=97, eos_id=0, seed=3).eval()
    ids = torch.randint(1, 97, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    calls = []
    hooks = [layer.register_forward_hook(lambda m, i, o, n=n: calls.append(n)) for n, layer in enumerate(decoder_layers(model))]
    got = middle_layer_states(model, ids, mask)
    m = middle_layer(layers)
    assert calls == list(range(m)), "no layer above the middle one may run"
    for h in hooks:
        h.remove()
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(full) == layers + 1 and len(full) // 2 == m
    torch.testing.assert_close(got, full[len(full) // 2], rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_a_samples_embedding() -> None:
    cfg = ModelConfig(hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64, context_length=32)
    model = build_model(cfg, vocab_size=50, eos_id=0, seed=0)
    short, long = np.arange(1, 6), np.arange(1, 21) % 49 + 1
    together = embed_windows(model, [long, short], batch_size=2, pad_id=0, device=CPU)
    alone = embed_windows(model, [short], batch_size=1, pad_id=0, device=CPU)
    np.testing.assert_allclose(together[1], alone[0], atol=1e-5)
    # And the pooled vector is the plain mean of the unpadded tokens' states.
    with torch.no_grad():
        states = middle_layer_states(model, torch.as_tensor(short)[None], torch.ones(1, 5, dtype=torch.long))
    np.testing.assert_allclose(alone[0], states[0].mean(0).numpy(), atol=1e-6)


def test_windows_are_seeded_in_range_and_short_domains_give_one_window() -> None:
    tokens = np.arange(1000)
    a = sample_windows(tokens, 5, 100, seed=1)
    b = sample_windows(tokens, 5, 100, seed=1)
    assert len(a) == 5 and all(len(w) == 100 for w in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.array_equal(w, np.arange(w[0], w[0] + 100)) for w in a)
    assert [len(w) for w in sample_windows(np.arange(30), 5, 100, seed=1)] == [30]


def test_the_forward_pass_is_float32_unless_bfloat16_is_asked_for() -> None:
    cfg = ModelConfig(hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64, context_length=32)
    model = build_model(cfg, vocab_size=50, eos_id=0, seed=0)
    windows = [np.arange(1, 17) % 49 + 1, np.arange(3, 19) % 49 + 1]
    default = embed_windows(model, windows, batch_size=2, pad_id=0, device=CPU)
    with torch.no_grad():
        states = middle_layer_states(model, torch.as_tensor(np.stack(windows)), torch.ones(2, 16, dtype=torch.long))
    assert states.dtype == torch.float32
    np.testing.assert_allclose(default, states.mean(1).numpy(), rtol=1e-6, atol=1e-6)
    bf16 = embed_windows(model, windows, batch_size=2, pad_id=0, device=CPU, dtype="bfloat16")
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, default)  # rounded to 8 mantissa bits on the way
    np.testing.assert_allclose(bf16, default, atol=0.1 * np.abs(default).max())
    with pytest.raises(ValueError, match="float32"):
        embed_windows(model, windows, batch_size=2, pad_id=0, device=CPU, dtype="float16")
