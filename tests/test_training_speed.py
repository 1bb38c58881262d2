"""What makes the training step fast per device, and how its speed is reported: the loss each
device trains with, the padded vocabulary, batches drawn ahead on a thread, and tokens/s
and MFU from steady-state steps against a named peak (``core.train``, ``core.loss``,
``core.cost``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from chameleon_assets.core import cost
from chameleon_assets.core import train as train_mod
from chameleon_assets.core.ddp_worker import training_metadata
from chameleon_assets.core.loss import CausalLMLoss, PlainCausalLMLoss, causal_lm_loss, resolve_loss
from chameleon_assets.core.model import ModelConfig, build_model, padded_vocab
from chameleon_assets.core.schema import InvalidSetting
from chameleon_assets.core.train import (BatchPrefetcher, Distributed, StepClock, TrainConfig, WeightedDomainSampler,
                                         train_causal_lm)

REPO = Path(__file__).resolve().parents[1]
MCFG = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context_length=16)
TOKENS = {"a": np.arange(1, 3001) % 97, "b": np.arange(1, 2001) % 89}
WEIGHTS = {"a": 0.6, "b": 0.4}


# --- The loss per device -------------------------------------------------------------------

@pytest.mark.parametrize(("choice", "device", "expected"), [
    ("auto", "cpu", "chunked"),  # 1.46x the full-logit step on the cpu profile (train_step.json)
    ("auto", "cuda", "full"),  # compiled full logits: 438k against 229k tokens/s on an H200 (issue 27)
    ("auto", "cuda:1", "full"),
    ("auto", "mps", "chunked"),
    ("full", "cpu", "full"),
    ("chunked", "cuda", "chunked"),
])
def test_each_device_trains_with_the_loss_it_is_fastest_with(choice: str, device: str, expected: str) -> None:
    assert resolve_loss(choice, device) == expected
    model = build_model(MCFG, vocab_size=100, eos_id=0, seed=0)
    module = causal_lm_loss(model, choice, device)
    assert type(module) is {"chunked": CausalLMLoss, "full": PlainCausalLMLoss}[expected]


def test_an_unknown_loss_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown loss 'fused'"):
        resolve_loss("fused", "cpu")
    with pytest.raises(InvalidSetting, match="loss: must be one of 'auto', 'chunked', 'full'"):
        TrainConfig(loss="fused")


def test_a_head_with_a_bias_gets_full_logits_whatever_is_asked() -> None:
    model = build_model(MCFG, vocab_size=100, eos_id=0, seed=0)
    model.lm_head = torch.nn.Linear(32, 100, bias=True)
    assert type(causal_lm_loss(model, "chunked", "cpu")) is PlainCausalLMLoss


# --- The padded vocabulary -----------------------------------------------------------------

def test_the_vocabulary_is_padded_to_the_configured_multiple() -> None:
    assert padded_vocab(50_257, 64) == 50_304  # nanoGPT's GPT-2 vocabulary
    assert padded_vocab(8_192, 64) == 8_192 and padded_vocab(100, 1) == 100
    model = build_model(ModelConfig(**{**MCFG.__dict__, "vocab_multiple": 64}), vocab_size=100, eos_id=0, seed=0)
    assert model.get_input_embeddings().weight.shape[0] == 128
    assert model.get_output_embeddings().weight.shape[0] == 128


def test_padded_rows_are_never_targets_and_training_takes_probability_away_from_them() -> None:
    """The 28 padding rows of a 100-token vocabulary padded to 128 hold 22% of the
    probability at initialisation; training on real tokens only lowers that share, and a
    padding row ends with less mass than the average token that occurs."""
    cfg = ModelConfig(**{**MCFG.__dict__, "vocab_multiple": 64})
    model = build_model(cfg, vocab_size=100, eos_id=0, seed=0)
    probe = torch.as_tensor(TOKENS["b"][5:21][None])

    def mass() -> tuple[float, float]:
        with torch.no_grad():
            p = model(input_ids=probe).logits[0].softmax(-1)
        return p[:, 100:].sum(-1).mean().item() / 28, p[:, :89].sum(-1).mean().item() / 89

    padding_before, _ = mass()
    sampler = WeightedDomainSampler(TOKENS, WEIGHTS, seq_len=16, seed=1)
    train_causal_lm(model, sampler, TrainConfig(tokens=4 * 16 * 30, batch_size=4, lr=1e-2, warmup_steps=2),
                    torch.device("cpu"), progress=False)
    padding_after, seen_after = mass()
    assert padding_before == pytest.approx(0.219 / 28, rel=0.05)
    assert padding_after < 0.8 * padding_before and padding_after < seen_after


# --- Steady-state speed ----------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_step_clock_times_the_first_step_the_warm_up_and_the_steady_steps_apart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Hand-worked: 1,000 tokens a step; the first step takes 30 s (compilation), steps 2-10
    0.5 s each, steps 11-40 0.1 s each, and a 2 s checkpoint is written after step 20."""
    clock = FakeClock()
    monkeypatch.setattr(train_mod.time, "perf_counter", clock)
    timer = StepClock(start_step=0, tokens_per_step=1000)
    clock.now += 30.0
    timer.mark(1)
    clock.now += 9 * 0.5
    timer.mark(10)
    for step in (20, 30, 40):
        clock.now += 10 * 0.1
        timer.mark(step)
        if step == 20:
            clock.now += 2.0
            timer.exclude(2.0)
    summary = timer.summary()
    # the steady window opens at the first mark >= 1 + WARMUP_STEPS (5): step 10
    assert summary["first_step_s"] == pytest.approx(30.0)
    assert (summary["warmup_steps"], summary["warmup_s"]) == (9, pytest.approx(4.5))
    assert (summary["steady_steps"], summary["steady_s"]) == (30, pytest.approx(3.0))
    assert summary["tokens_per_s"] == pytest.approx(30 * 1000 / 3.0)


def test_step_clock_on_a_run_too_short_for_a_steady_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two marks (steps 1 and 4): measured from the end of the first step; one mark: the whole run."""
    clock = FakeClock()
    monkeypatch.setattr(train_mod.time, "perf_counter", clock)
    timer = StepClock(start_step=0, tokens_per_step=10)
    clock.now += 5.0
    timer.mark(1)
    assert timer.tokens_per_s() == pytest.approx(10 / 5.0)
    clock.now += 3.0
    timer.mark(4)
    timer.mark(4)  # a second mark of the same step (first step and loss read together) is one mark
    assert timer.tokens_per_s() == pytest.approx(3 * 10 / 3.0)
    assert timer.summary()["steady_steps"] == 3


class TimedSampler(WeightedDomainSampler):
    """Notes when each micro-batch is drawn, and makes the first draw slow (a stand-in for
    torch.compile's compilation in the first step)."""

    def __init__(self, *args, first_delay: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.draw_times: list[float] = []
        self.first_delay = first_delay

    def draw_domains(self, count: int) -> list[str]:
        if not self.draw_times and self.first_delay:
            time.sleep(self.first_delay)
        self.draw_times.append(time.perf_counter())
        return super().draw_domains(count)


def test_reported_speed_is_the_steady_state_and_agrees_with_an_outside_timing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The figure the progress line, the metadata and MLflow get: tokens/s of the steady
    steps only (a 1.5 s first step is left out and reported apart), within 10% of the same
    steps timed from outside (when their batches were drawn, to when the call returned);
    MFU is that rate times the FLOPs per token over the fixed peak, named as its source."""
    monkeypatch.setenv("CHAMELEON_PEAK_FLOPS", "2.5e11")
    model = build_model(MCFG, vocab_size=100, eos_id=0, seed=0)
    sampler = TimedSampler(TOKENS, WEIGHTS, seq_len=16, seed=1, first_delay=1.5)
    cfg = TrainConfig(tokens=8 * 16 * 2 * 60, batch_size=8, grad_accum=2, lr=1e-3, warmup_steps=2)
    lines: list[str] = []
    result = train_causal_lm(model, sampler, cfg, torch.device("cpu"), progress=False, log=lines.append)
    t_return = time.perf_counter()
    extra = result.extra
    assert result.steps == 60 and extra["steady_steps"] == 50 and extra["warmup_steps"] == 9
    opening = 1 + extra["warmup_steps"]  # the steady window: the steps after this one
    outside = extra["steady_steps"] * 8 * 2 * 16 / (t_return - sampler.draw_times[opening * cfg.grad_accum])
    assert result.tokens_per_s == pytest.approx(outside, rel=0.10)
    # the figure is the steady steps' alone; the slow first step is timed apart, in none of them
    assert result.tokens_per_s == pytest.approx(extra["steady_steps"] * 8 * 2 * 16 / extra["steady_s"], rel=1e-9)
    assert extra["first_step_s"] >= 1.5 and extra["steady_s"] < t_return - sampler.draw_times[opening * 2] + 0.1
    assert extra["mfu"] == pytest.approx(extra["flops_per_token"] * result.tokens_per_s / 2.5e11, rel=1e-12)
    assert (extra["peak_flops"], extra["peak_source"]) == (2.5e11, "CHAMELEON_PEAK_FLOPS")
    metadata = training_metadata(extra, result.tokens_per_s)
    assert metadata["peak_source"] == "CHAMELEON_PEAK_FLOPS" and metadata["steady_steps"] == 50
    assert metadata["first_step_s"] >= 1.5 and metadata["training_loss"] == "chunked"
    assert metadata["mfu"] == round(extra["mfu"], 4)
    assert any("step 60/60" in line and "tokens/s, MFU" in line for line in lines)
    final = lines[-1]
    assert "over 50 steady steps" in final and "CHAMELEON_PEAK_FLOPS" in final and "first step" in final


def test_the_peak_is_measured_once_per_device_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAMELEON_PEAK_FLOPS", raising=False)
    monkeypatch.setattr(cost, "_MEASURED", {})
    calls = []

    def fake_measure(device, dtype, size, repeats=5):  # noqa: ANN001, ANN202
        calls.append((device.type, str(dtype), size))
        return 1.25e11

    monkeypatch.setattr(cost, "measure_matmul_flops", fake_measure)
    cpu = torch.device("cpu")
    first, again = cost.device_peak(cpu, bf16=False), cost.device_peak(cpu, bf16=False)
    assert first is again and calls == [("cpu", "torch.float32", cost.PEAK_MATMUL_SIZE["cpu"])]
    assert first == cost.Peak(1.25e11, "measured: float32 matmul 1024^3 on cpu")
    monkeypatch.setenv("CHAMELEON_PEAK_FLOPS", "3e12")
    assert cost.device_peak(cpu) == cost.Peak(3e12, "CHAMELEON_PEAK_FLOPS")


def test_a_measured_matmul_rate_is_two_n_cubed_over_the_fastest_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """2 x 64^3 FLOPs over the fastest of the timed products (the clock advances 1 ms per
    product after a 5 ms warm-up)."""
    clock = FakeClock()
    real_mm = torch.mm

    def mm(a, b):  # noqa: ANN001, ANN202
        clock.now += 0.001 if calls else 0.005
        calls.append(1)
        return real_mm(a, b)

    calls: list[int] = []
    monkeypatch.setattr(torch, "mm", mm)
    monkeypatch.setattr(time, "perf_counter", clock)
    assert cost.measure_matmul_flops(torch.device("cpu"), torch.float32, 64, repeats=3) == pytest.approx(
        2 * 64**3 / 0.001)
    assert len(calls) == 4


# --- Batches drawn ahead on a thread -------------------------------------------------------

def test_the_prefetcher_hands_out_the_sampler_s_batches_in_order_and_rewinds_what_it_read_ahead() -> None:
    direct = WeightedDomainSampler(TOKENS, WEIGHTS, seq_len=16, seed=3)
    expected = [direct.next_batch_shard(4) for _ in range(5)]
    sampler = WeightedDomainSampler(TOKENS, WEIGHTS, seq_len=16, seed=3)
    prefetch = BatchPrefetcher(sampler, 4, Distributed(), depth=3, pin=False)
    got = [prefetch.next() for _ in range(5)]
    time.sleep(0.2)  # let the thread run ahead of what was taken
    prefetch.close()
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    assert sampler.state_dict()["cursors"] == direct.state_dict()["cursors"]
    assert sampler.draws == direct.draws and sampler.epochs_seen() == direct.epochs_seen()
    assert torch.equal(sampler.next_batch_shard(4), direct.next_batch_shard(4))  # the rng rewound too


def test_a_failing_draw_is_raised_in_the_training_loop() -> None:
    class Broken(WeightedDomainSampler):
        def next_batch_shard(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise OSError("shard unreadable")

    prefetch = BatchPrefetcher(Broken(TOKENS, WEIGHTS, seq_len=16, seed=0), 4, Distributed(), pin=False)
    with pytest.raises(OSError, match="shard unreadable"):
        prefetch.next()
    prefetch.close()


def test_training_with_batches_drawn_ahead_follows_the_same_trajectory_and_resumes_exactly(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU's prefetching path, run on the CPU: the same losses and weights as drawing in
    the loop; a run stopped after its step-8 checkpoint and restarted ends where an
    uninterrupted one does (the checkpoint holds the sampler state of the batches trained
    on, not of those the thread had read ahead)."""
    cfg = TrainConfig(tokens=4 * 16 * 2 * 20, batch_size=4, grad_accum=2, lr=1e-2, warmup_steps=2, checkpoint_every=8)

    def run(checkpoints=None, stop_after: int | None = None):  # noqa: ANN001, ANN202
        model = build_model(MCFG, vocab_size=100, eos_id=0, seed=0)
        sampler = WeightedDomainSampler(TOKENS, WEIGHTS, seq_len=16, seed=1)

        def on_step(step: int, loss: float, rate: float) -> None:
            if stop_after is not None and step == stop_after:
                raise KeyboardInterrupt

        try:
            result = train_causal_lm(model, sampler, cfg, torch.device("cpu"), checkpoint_dir=checkpoints,
                                     run_key="k", on_step=on_step, progress=False)
        except KeyboardInterrupt:
            return None, model
        return result, model

    plain, plain_model = run()
    monkeypatch.setattr(train_mod, "PREFETCH_DEVICES", frozenset({"cpu"}))
    ahead, ahead_model = run()
    assert ahead.losses == plain.losses and ahead.draws == plain.draws and ahead.epochs == plain.epochs
    for p, q in zip(ahead_model.parameters(), plain_model.parameters()):
        assert torch.equal(p, q)
    assert run(tmp_path / "ckpt", stop_after=10)[0] is None  # killed after the step-8 checkpoint
    resumed, resumed_model = run(tmp_path / "ckpt")
    assert resumed.resumed_from == 8 and resumed.losses == plain.losses and resumed.draws == plain.draws
    for p, q in zip(resumed_model.parameters(), plain_model.parameters()):
        assert torch.equal(p, q)


# --- Speed settings and data versions ----------------------------------------------------------

def test_how_the_loss_is_computed_is_in_no_data_version_but_a_padded_vocabulary_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``train.loss`` and ``train.compile`` change rounding only: no section version moves.
    ``model.vocab_multiple`` changes the model: 1 (no padding) hashes as before the key
    existed, 64 stales the sections that build the model."""
    import dataclasses

    from chameleon_assets.sections import section_version
    from chameleon_assets.settings import load_mixtures, load_profile

    monkeypatch.setenv("CHAMELEON_CONF_DIR", str(REPO / "conf"))
    profile, mixtures = load_profile("cpu"), load_mixtures()
    sections = ("proxy", "base_model", "finetune", "doremi", "doge", "regmix_run")

    def versions(p) -> dict[str, str]:  # noqa: ANN001
        return {s: section_version(s, p, mixtures) for s in sections}

    before = versions(profile)
    faster = dataclasses.replace(profile, proxy=dataclasses.replace(
        profile.proxy, train=dataclasses.replace(profile.proxy.train, loss="full", compile=True)),
        base_model=dataclasses.replace(profile.base_model, train=dataclasses.replace(
            profile.base_model.train, loss="chunked")))
    assert versions(faster) == before
    padded = dataclasses.replace(profile, base_model=dataclasses.replace(
        profile.base_model, model=dataclasses.replace(profile.base_model.model, vocab_multiple=64)))
    changed = {s for s, v in versions(padded).items() if v != before[s]}
    assert changed == {"base_model"}


def test_a_bad_loss_in_a_profile_is_one_line_naming_the_field(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chameleon_assets.settings import ConfigError, load_profile

    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text("proxy:\n  train: {loss: fused}\n  model: {vocab_multiple: 0}\n")
    monkeypatch.setenv("CHAMELEON_CONF_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as error:
        load_profile("p")
    lines = str(error.value).splitlines()
    assert any(line.endswith("p.yaml: proxy.train.loss: must be 'auto', 'chunked' or 'full' (got 'fused')")
               for line in lines), lines
    assert any(line.endswith("p.yaml: proxy.model.vocab_multiple: must be greater than or equal to 1 (got 0)")
               for line in lines), lines
