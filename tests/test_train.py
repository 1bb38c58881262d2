"""The weighted domain sampler and the resumable training loop."""

from pathlib import Path

import numpy as np
import pytest
import torch

from chameleon_assets.core.artifacts import MANIFEST, manifest_of, sha256_text
from chameleon_assets.core.model import build_model
from chameleon_assets.core.train import WeightedDomainSampler, lr_at, total_steps, train_causal_lm
from chameleon_assets.settings import ModelConfig, TrainConfig

TOKENS = {"a": np.arange(1, 1001) % 97, "b": np.arange(1, 501) % 89, "c": np.arange(1, 201) % 83}


def test_sampler_draws_domains_in_the_requested_proportions() -> None:
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    sampler = WeightedDomainSampler(TOKENS, weights, seq_len=8, seed=0)
    n = 20_000
    draws = sampler.draw_domains(n)
    observed = np.array([draws.count(d) for d in ("a", "b", "c")])
    expected = n * np.array([0.5, 0.3, 0.2])
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    # 2 degrees of freedom: P(chi2 > 13.8) = 0.001.
    assert chi2 < 13.8, (observed, chi2)


def test_sampler_is_deterministic_and_zero_weight_domains_are_never_drawn() -> None:
    s1 = WeightedDomainSampler(TOKENS, {"a": 0.7, "b": 0.3, "c": 0.0}, seq_len=8, seed=5)
    s2 = WeightedDomainSampler(TOKENS, {"a": 0.7, "b": 0.3, "c": 0.0}, seq_len=8, seed=5)
    assert torch.equal(s1.next_batch(64), s2.next_batch(64))
    assert s1.draws["a"] + s1.draws["b"] == 64 and "c" not in s1.draws


def test_windows_are_contiguous_and_wrapping_counts_an_epoch() -> None:
    tokens = {"a": np.arange(20)}
    s = WeightedDomainSampler(tokens, {"a": 1.0}, seq_len=8, seed=0)
    rows = [s.next_batch(1)[0].tolist() for _ in range(3)]
    assert rows[0] == list(range(0, 9)) and rows[1] == list(range(8, 17))
    assert rows[2] == list(range(0, 9)) and s.epochs["a"] == 1  # 16 + 9 > 20: wrapped


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_at(s, cfg, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg, 14) == pytest.approx(1.0)
    assert lr_at(9, cfg, 14) == pytest.approx(0.55)  # halfway: 0.1 + 0.9 * 0.5
    assert lr_at(14, cfg, 14) == pytest.approx(0.1)
    assert total_steps(TrainConfig(tokens=1000, batch_size=4, grad_accum=2), seq_len=16) == 8


class _Interrupt(Exception):
    pass


def _run(ckpt: Path | None, stop_at: int | None = None):
    cfg = ModelConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, context_length=8)
    tcfg = TrainConfig(tokens=4 * 8 * 12, batch_size=4, lr=1e-2, warmup_steps=2, checkpoint_every=5)
    model = build_model(cfg, vocab_size=100, eos_id=0, seed=0)
    sampler = WeightedDomainSampler(TOKENS, {"a": 0.6, "b": 0.4}, seq_len=8, seed=1)

    def on_step(step: int, loss: float, rate: float) -> None:
        if stop_at is not None and step == stop_at:
            raise _Interrupt

    return train_causal_lm(model, sampler, tcfg, torch.device("cpu"), ckpt, "k", on_step, progress=False)


def test_an_interrupted_run_resumes_on_the_uninterrupted_trajectory(tmp_path: Path) -> None:
    reference = _run(None)
    assert reference.steps == 12 and len(reference.losses) == 12
    with pytest.raises(_Interrupt):
        _run(tmp_path / "ckpt", stop_at=7)  # killed after step 7; last checkpoint at step 5
    resumed = _run(tmp_path / "ckpt")
    assert resumed.resumed_from == 5
    np.testing.assert_allclose(resumed.losses, reference.losses, rtol=1e-5)
    assert resumed.draws == reference.draws


def _run_with_dropout(ckpt: Path | None, stop_at: int | None = None, p: float = 0.1):  # noqa: ANN202
    """``_run``'s training of a GPT-2 with dropout ``p`` everywhere: each step draws masks from torch's RNG."""
    cfg = ModelConfig(arch="gpt2", hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, context_length=8)
    tcfg = TrainConfig(tokens=4 * 8 * 12, batch_size=4, lr=1e-2, warmup_steps=2, checkpoint_every=5)
    model = build_model(cfg, vocab_size=100, eos_id=0, seed=0)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts  # embeddings, attention and residuals: GPT-2's own modules, built with p = 0
    for m in dropouts:
        m.p = p
    sampler = WeightedDomainSampler(TOKENS, {"a": 0.6, "b": 0.4}, seq_len=8, seed=1)

    def on_step(step: int, loss: float, rate: float) -> None:
        if stop_at is not None and step == stop_at:
            raise _Interrupt

    result = train_causal_lm(model, sampler, tcfg, torch.device("cpu"), ckpt, "k", on_step, progress=False)
    return result, model


def test_an_interrupted_run_with_dropout_resumes_on_the_uninterrupted_trajectory_exactly(tmp_path: Path) -> None:
    """The checkpoint's torch RNG state is what makes the resumed steps draw the same
    dropout masks; without it they draw the masks of the run's first steps again."""
    reference, reference_model = _run_with_dropout(None)
    without_dropout, _ = _run_with_dropout(None, p=0.0)
    with pytest.raises(_Interrupt):
        _run_with_dropout(tmp_path / "ckpt", stop_at=7)  # killed after step 7; last checkpoint at step 5
    resumed, resumed_model = _run_with_dropout(tmp_path / "ckpt")
    assert resumed.resumed_from == 5
    assert reference.losses != without_dropout.losses  # the dropout did draw masks
    np.testing.assert_array_equal(resumed.losses, reference.losses)
    for (name, p), q in zip(resumed_model.named_parameters(), reference_model.parameters()):
        assert torch.equal(p, q), name


def test_a_checkpoint_of_different_settings_is_not_resumed(tmp_path: Path) -> None:
    with pytest.raises(_Interrupt):
        _run(tmp_path / "ckpt", stop_at=6)
    cfg = ModelConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, context_length=8)
    model = build_model(cfg, vocab_size=100, eos_id=0, seed=0)
    sampler = WeightedDomainSampler(TOKENS, {"a": 0.6, "b": 0.4}, seq_len=8, seed=1)
    other = TrainConfig(tokens=4 * 8 * 12, batch_size=4, lr=5e-3, warmup_steps=2, checkpoint_every=5)
    result = train_causal_lm(model, sampler, other, torch.device("cpu"), tmp_path / "ckpt", "k", progress=False)
    assert result.resumed_from == 0


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_holding_a_code_running_pickle_is_refused(tmp_path: Path) -> None:
    import json

    marker = tmp_path / "pwned"
    torch.save({"model": _Payload(marker)}, tmp_path / "state.pt")
    model = build_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                    context_length=8), 32, 0, seed=0)
    sampler = WeightedDomainSampler({"a": np.arange(200) % 32}, {"a": 1.0}, 8, seed=0)
    cfg = TrainConfig(tokens=64, batch_size=2, lr=1e-3, warmup_steps=1, checkpoint_every=1)
    key = sha256_text("k", repr(cfg))[:16]  # the key train_causal_lm resumes under
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (tmp_path / "state.pt").rename(ckpt / "state.pt")
    (ckpt / "state.json").write_text(json.dumps({"key": key, "step": 1, "losses": [1.0]}))
    # A complete manifest, as an intact checkpoint has: only the unpickling can refuse it.
    (ckpt / MANIFEST).write_text(json.dumps(manifest_of(ckpt)))
    with pytest.raises(Exception, match="Weights only load failed"):
        train_causal_lm(model, sampler, cfg, torch.device("cpu"), checkpoint_dir=ckpt, run_key="k", progress=False)
    assert not marker.exists()


def test_a_damaged_checkpoint_is_not_resumed(tmp_path: Path) -> None:
    model_cfg = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, context_length=8)
    cfg = TrainConfig(tokens=160, batch_size=2, lr=1e-3, warmup_steps=1, checkpoint_every=2)

    def train(stop_after: int | None = None):  # noqa: ANN202
        model = build_model(model_cfg, 32, 0, seed=0)
        sampler = WeightedDomainSampler({"a": np.arange(400) % 32}, {"a": 1.0}, 8, seed=0)

        def stop(step: int, loss: float, rate: float) -> None:
            if stop_after is not None and step == stop_after:
                raise KeyboardInterrupt

        return train_causal_lm(model, sampler, cfg, torch.device("cpu"), checkpoint_dir=tmp_path / "c",
                               run_key="k", progress=False, on_step=stop)

    with pytest.raises(KeyboardInterrupt):
        train(stop_after=5)
    state = tmp_path / "c" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated on disk
    assert train().resumed_from == 0  # started over instead of crashing on a torn file


def test_a_model_folder_with_only_pickled_weights_is_refused(tmp_path: Path) -> None:
    from chameleon_assets.core.model import load_model

    model = build_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                    context_length=8), 32, 0, seed=0)
    model.save_pretrained(tmp_path, safe_serialization=True)
    load_model(tmp_path)  # safetensors: fine
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    marker = tmp_path / "pwned"
    torch.save({"w": _Payload(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="no .safetensors weights"):
        load_model(tmp_path)
    assert not marker.exists()


def test_cpu_bfloat16_keeps_attention_in_float32_and_follows_the_float32_trajectory() -> None:
    """``precision: bfloat16`` on the CPU: matrix multiplies in bf16, attention through the
    float32 SDPA function (its output equal to plain SDPA's), the model's own attention
    setting restored afterwards, and a loss trajectory within bf16 rounding of float32's."""
    from chameleon_assets.core.model import CPU_BF16_ATTENTION, register_cpu_bf16_attention

    mcfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context_length=16)
    x = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    model = build_model(mcfg, vocab_size=100, eos_id=0, seed=0).eval()
    with torch.no_grad():
        reference = model(input_ids=x).logits
        model.config._attn_implementation = register_cpu_bf16_attention()
        same = model(input_ids=x).logits  # outside autocast it is plain float32 SDPA
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(input_ids=x).logits
    torch.testing.assert_close(same, reference, rtol=0, atol=1e-6)
    assert mixed.dtype == torch.bfloat16
    assert (mixed.float() - reference).abs().max() < 0.1

    losses = {}
    for precision in ("float32", "bfloat16"):
        model = build_model(mcfg, vocab_size=100, eos_id=0, seed=0)
        sampler = WeightedDomainSampler(TOKENS, {"a": 0.6, "b": 0.4}, seq_len=16, seed=1)
        tcfg = TrainConfig(tokens=4 * 16 * 20, batch_size=4, lr=1e-2, warmup_steps=2, precision=precision)
        seen = []
        real_forward = type(model.model.layers[0].self_attn).forward

        def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            seen.append(self.config._attn_implementation)
            return real_forward(self, *args, **kwargs)

        type(model.model.layers[0].self_attn).forward = spy
        try:
            losses[precision] = train_causal_lm(model, sampler, tcfg, torch.device("cpu"), progress=False).losses
        finally:
            type(model.model.layers[0].self_attn).forward = real_forward
        assert set(seen) == {CPU_BF16_ATTENTION if precision == "bfloat16" else "sdpa"}
        assert model.config._attn_implementation == "sdpa"
    assert len(losses["bfloat16"]) == len(losses["float32"]) == 20
    assert losses["bfloat16"] != losses["float32"]  # it did run in another precision
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], atol=0.05)
    assert losses["bfloat16"][-1] < losses["bfloat16"][0] - 0.5  # and it learns
