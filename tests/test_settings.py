"""Profiles and mixtures are validated on load; errors name the file and the key."""

from pathlib import Path

import pytest

from chameleon_assets.settings import ConfigError, load_mixtures, load_profile


def _profile(project: Path, text: str) -> None:
    (project / "conf" / "profiles" / "bad.yaml").write_text(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: 0\ncolour: red\n", r"bad.yaml: unknown key\(s\) \['colour'\]"),
        ("proxy:\n  train: {tokens: many}\n", r"bad.yaml.proxy.train.tokens: expected an integer, got 'many'"),
        ("proxy:\n  model: {arch: rnn}\n", r"proxy.model.arch: 'rnn' is not 'llama' or 'gpt2'"),
        ("base_model:\n  model: {hidden_size: 100, num_heads: 3}\n", "not divisible by num_heads"),
        ("val_fraction: 1.5\n", "val_fraction must be in"),
        ("evaluation: {tasks: arc}\n", r"evaluation.tasks: expected a list"),
    ],
)
def test_bad_profiles_name_file_and_key(project: Path, text: str, message: str) -> None:
    _profile(project, text)
    with pytest.raises(ConfigError, match=message):
        load_profile("bad")


def test_shipped_profiles_load_and_gpu_is_paper_scale() -> None:
    cpu, gpu = load_profile("cpu"), load_profile("gpu")
    assert cpu.tokenizer == "bpe-8k" and gpu.tokenizer == "gpt2"
    m = gpu.proxy.model
    assert (m.arch, m.num_layers, m.hidden_size, m.context_length) == ("gpt2", 6, 768, 512)


def test_missing_profile_and_unknown_mixture_are_refused(project: Path) -> None:
    with pytest.raises(ConfigError, match="nosuch.yaml: file not found"):
        load_profile("nosuch")
    bad = project / "conf" / "mixtures.yaml"
    bad.write_text("mixtures: [uniform, doremi]\n")
    with pytest.raises(ConfigError, match="'doremi' is neither built in"):
        load_mixtures(bad)
    bad.write_text("chameleon: {lam: 0}\n")
    with pytest.raises(ConfigError, match="lam, t_pretrain and t_finetune must be positive"):
        load_mixtures(bad)
