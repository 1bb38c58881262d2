"""The fused output-layer cross-entropy (``core.loss``) against the plain one, and how
``train.precision`` resolves on a device with and without bfloat16 in hardware."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chameleon_assets.core import model as model_mod
from chameleon_assets.core.loss import (
    CausalLMLoss,
    PlainCausalLMLoss,
    causal_lm_loss,
    default_chunk,
    fused_linear_cross_entropy,
)
from chameleon_assets.core.model import build_model, register_cpu_bf16_attention, training_precision
from chameleon_assets.core.train import WeightedDomainSampler, train_causal_lm
from chameleon_assets.settings import ModelConfig, TrainConfig

MCFG = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context_length=16)
TOKENS = {"a": np.arange(1, 1001) % 97, "b": np.arange(1, 501) % 89}


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("chunk", [None, 7, 1000])  # default, one that leaves a ragged last chunk, one chunk
def test_fused_loss_and_gradients_equal_the_plain_cross_entropy(arch: str, chunk: int | None) -> None:
    model = build_model(ModelConfig(arch=arch, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                    context_length=16), vocab_size=100, eos_id=0, seed=0)
    x = torch.randint(0, 100, (3, 17), generator=torch.Generator().manual_seed(1))
    logits = model(input_ids=x[:, :-1]).logits
    plain = F.cross_entropy(logits.reshape(-1, 100), x[:, 1:].reshape(-1))
    plain.backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)

    hidden = model.base_model(input_ids=x[:, :-1]).last_hidden_state.reshape(-1, 32)
    fused = fused_linear_cross_entropy(hidden, model.get_output_embeddings().weight, x[:, 1:].reshape(-1), chunk)
    (2.0 * fused).backward()  # the incoming gradient is honoured
    got = _grads(model)

    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], 2.0 * expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_fused_loss_without_gradients_computes_the_loss_only() -> None:
    hidden, weight = torch.randn(10, 4), torch.randn(6, 4)
    targets = torch.randint(0, 6, (10,))
    with torch.no_grad():
        fused = fused_linear_cross_entropy(hidden, weight, targets, chunk=3)
    torch.testing.assert_close(fused, F.cross_entropy(hidden @ weight.T, targets))


def test_fused_loss_is_exact_when_logits_are_far_apart() -> None:
    """Logits spread over thousands (some targets' probabilities underflow float32 to 0):
    the loss and gradients still equal a float64 reference (lse = max - log(max softmax))."""
    g = torch.Generator().manual_seed(3)
    hidden = (torch.randn(40, 8, generator=g) * 30).requires_grad_()
    weight = (torch.randn(50, 8, generator=g) * 30).requires_grad_()
    targets = torch.randint(0, 50, (40,), generator=g)
    fused = fused_linear_cross_entropy(hidden, weight, targets, chunk=16)
    fused.backward()
    h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    reference = F.cross_entropy(h64 @ w64.T, targets)
    reference.backward()
    assert torch.softmax((h64 @ w64.T).float(), -1).gather(1, targets[:, None]).min() == 0  # the hard case occurs
    torch.testing.assert_close(fused.double(), reference, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(hidden.grad.double(), h64.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(weight.grad.double(), w64.grad, rtol=1e-4, atol=1e-4)


def test_fused_loss_under_bfloat16_autocast_matches_the_plain_bfloat16_path() -> None:
    """Under autocast both multiply in bf16 and take the softmax in float32."""
    model = build_model(MCFG, vocab_size=100, eos_id=0, seed=0)
    x = torch.randint(0, 100, (4, 17), generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = PlainCausalLMLoss(model)(x[:, :-1], x[:, 1:])
        fused = CausalLMLoss(model)(x[:, :-1], x[:, 1:])
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-3)


# bfloat16 keeps 8 significant bits (a rounding is off by up to 2^-9 = 0.002 relative). The
# fused and plain bf16 paths round the same products, but scale by 1/N before or after the
# bf16 cast and sum chunks in another order, so their gradients differ by a few 2^-9 in
# norm: at most 0.0085 per parameter on these models (both archs, 4 batches). 0.02 leaves
# twice that, and a gradient off by a few percent (a wrong scale, a dropped chunk) fails.
BF16_GRAD_RTOL = 0.02


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """||got - expected|| / ||expected||, in float32."""
    return float((got.float() - expected.float()).norm() / expected.float().norm())


def test_fused_gradients_under_bfloat16_autocast_equal_the_plain_bfloat16_gradients() -> None:
    """Gradients of the hidden states and of the output weights, not only the loss: the
    bf16 branch computes them itself in the forward pass. 45 rows in chunks of 16 (a ragged
    last chunk; 1/45 is not a power of two, so the scaling rounds as it would in training)."""
    g = torch.Generator().manual_seed(4)
    hidden, weight = torch.randn(45, 32, generator=g), 0.2 * torch.randn(100, 32, generator=g)
    targets = torch.randint(0, 100, (45,), generator=g)
    grads = {}
    for kind in ("plain", "fused"):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if kind == "plain":  # what lm_head + PlainCausalLMLoss compute: a bf16 product, a float32 softmax
                loss = F.cross_entropy((h @ w.T).float(), targets)
            else:
                loss = fused_linear_cross_entropy(h, w, targets, chunk=16)
        loss.backward()
        grads[kind] = {"hidden": h.grad, "weight": w.grad}
    for name in ("hidden", "weight"):
        assert grads["fused"][name].dtype == torch.float32
        error = _relative_error(grads["fused"][name], grads["plain"][name])
        assert error < BF16_GRAD_RTOL, f"{name} gradient: relative error {error:.4f} against the plain bf16 path"


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_model_gradients_under_bfloat16_autocast_equal_the_plain_loss_gradients(arch: str) -> None:
    """Every parameter's gradient through ``CausalLMLoss`` under bf16 autocast against
    ``PlainCausalLMLoss`` under the same autocast: the hidden-state gradient reaches every
    layer, and the tied embedding sums the output weights' gradient with the input side's."""
    model = build_model(ModelConfig(arch=arch, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                    context_length=16), vocab_size=100, eos_id=0, seed=0)
    x = torch.randint(0, 100, (3, 17), generator=torch.Generator().manual_seed(3))  # 48 targets
    grads = {}
    for cls in (PlainCausalLMLoss, CausalLMLoss):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = cls(model)(x[:, :-1], x[:, 1:])
        loss.backward()
        grads[cls] = _grads(model)
    expected, got = grads[PlainCausalLMLoss], grads[CausalLMLoss]
    assert got.keys() == expected.keys() == {n for n, _ in model.named_parameters()}
    errors = {name: _relative_error(got[name], expected[name]) for name in expected}
    worst = max(errors, key=errors.get)
    assert errors[worst] < BF16_GRAD_RTOL, f"{worst}: relative error {errors[worst]:.4f} against the plain bf16 path"


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="hidden"):
        fused_linear_cross_entropy(torch.randn(4, 3), torch.randn(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        fused_linear_cross_entropy(torch.randn(4, 3), torch.randn(5, 3), torch.zeros(3, dtype=torch.long))


def test_a_model_whose_head_has_a_bias_gets_the_plain_loss() -> None:
    model = build_model(MCFG, vocab_size=100, eos_id=0, seed=0)
    assert isinstance(causal_lm_loss(model), CausalLMLoss)
    model.lm_head = torch.nn.Linear(32, 100, bias=True)
    assert isinstance(causal_lm_loss(model), PlainCausalLMLoss)
    assert default_chunk(8192) == 256 and default_chunk(10**6) == 32 and default_chunk(50257, "cuda") == 1335


def test_training_with_the_fused_loss_follows_the_plain_trajectory() -> None:
    """20 optimiser steps: the fused loss (``train.loss: chunked``) and the full-logit one
    (``full``) give the same losses and weights up to float32 rounding (the loop is
    otherwise identical), and each run reports the loss it used."""
    runs = {}
    for kind in ("chunked", "full"):
        model = build_model(MCFG, vocab_size=100, eos_id=0, seed=0)
        sampler = WeightedDomainSampler(TOKENS, {"a": 0.6, "b": 0.4}, seq_len=16, seed=1)
        cfg = TrainConfig(tokens=4 * 16 * 20, batch_size=4, lr=1e-2, warmup_steps=2, loss=kind)
        result = train_causal_lm(model, sampler, cfg, torch.device("cpu"), progress=False)
        assert result.extra["loss"] == kind
        runs[kind] = (result.losses, model)
    np.testing.assert_allclose(runs["chunked"][0], runs["full"][0], rtol=0, atol=1e-4)
    assert runs["chunked"][0][-1] < runs["chunked"][0][0] - 0.5
    for (name, p), q in zip(runs["chunked"][1].named_parameters(), runs["full"][1].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-3, msg=name)


@pytest.mark.parametrize(("precision", "native", "cuda", "expected"), [
    ("auto", True, False, "float32"),
    ("auto", False, True, "bfloat16"),
    ("float32", True, True, "float32"),
    ("bfloat16", False, False, "bfloat16"),
    ("bfloat16_if_native", True, False, "bfloat16"),
    ("bfloat16_if_native", False, False, "float32"),
    ("bfloat16_if_native", True, True, "bfloat16"),
])
def test_training_precision_resolves_per_device(monkeypatch: pytest.MonkeyPatch, precision: str, native: bool,
                                                cuda: bool, expected: str) -> None:
    monkeypatch.setattr(model_mod, "native_bf16", lambda device: native)
    device = torch.device("cuda" if cuda else "cpu")
    assert training_precision(precision, device) == expected


def test_bfloat16_if_native_trains_in_float32_on_a_cpu_without_bf16_and_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cpu profile's setting on an AVX2-only CPU: the float32 trajectory, reported as
    float32; an explicit bfloat16 there runs bf16 and warns that it is emulated."""
    monkeypatch.setattr(model_mod, "native_bf16", lambda device: False)
    monkeypatch.setattr("chameleon_assets.core.train.native_bf16", lambda device: False)
    results, logs = {}, {}
    for precision in ("float32", "bfloat16_if_native", "bfloat16"):
        model = build_model(MCFG, vocab_size=100, eos_id=0, seed=0)
        sampler = WeightedDomainSampler(TOKENS, {"a": 0.6, "b": 0.4}, seq_len=16, seed=1)
        cfg = TrainConfig(tokens=4 * 16 * 5, batch_size=4, lr=1e-2, warmup_steps=2, precision=precision)
        logs[precision] = []
        results[precision] = train_causal_lm(model, sampler, cfg, torch.device("cpu"), progress=False,
                                             log=logs[precision].append)
    assert results["bfloat16_if_native"].losses == results["float32"].losses
    assert results["bfloat16_if_native"].extra["precision"] == "float32"
    # what the training assets put in their materialisation metadata
    from chameleon_assets.core.ddp_worker import training_metadata

    result = results["bfloat16_if_native"]
    assert training_metadata(result.extra, result.tokens_per_s)["training_precision"] == "float32"
    assert results["bfloat16"].extra["precision"] == "bfloat16"
    # The first loss is the initial model's on the first batch, before any update: worked out
    # here under each precision, it shows the explicit bfloat16 run computed in bf16 (autocast,
    # attention in float32 as core.model.CPU_BF16_ATTENTION keeps it) and not in float32.
    model = build_model(MCFG, vocab_size=100, eos_id=0, seed=0).train()
    batch = WeightedDomainSampler(TOKENS, {"a": 0.6, "b": 0.4}, seq_len=16, seed=1).next_batch(4)
    with torch.no_grad():
        first_float32 = CausalLMLoss(model)(batch[:, :-1], batch[:, 1:]).item()
        model.config._attn_implementation = register_cpu_bf16_attention()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            first_bfloat16 = CausalLMLoss(model)(batch[:, :-1], batch[:, 1:]).item()
    assert first_bfloat16 != first_float32  # the two precisions are told apart on this batch
    assert results["float32"].losses[0] == first_float32
    assert results["bfloat16"].losses[0] == first_bfloat16
    # and afterwards within bf16 rounding of the float32 trajectory (measured: 0.002 apart at most)
    np.testing.assert_allclose(results["bfloat16"].losses, results["float32"].losses, rtol=0, atol=0.01)
    assert any("emulated" in line for line in logs["bfloat16"])
    assert not any("emulated" in line for line in logs["bfloat16_if_native"] + logs["float32"])


def test_native_bf16_on_this_cpu_is_what_its_kernel_flags_say() -> None:
    """native_bf16 asks torch's CPU probes; the kernel's flags, read here, are the independent
    answer: AVX512-BF16 or AMX-BF16 means bfloat16 in hardware."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU flags from")
    flags = {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags")
             for flag in line.partition(":")[2].split()}
    if not flags:
        pytest.skip("no x86 flags line in /proc/cpuinfo")
    assert model_mod.native_bf16(torch.device("cpu")) is bool(flags & {"avx512_bf16", "amx_bf16"})
    assert model_mod.native_bf16(torch.device("meta")) is False
