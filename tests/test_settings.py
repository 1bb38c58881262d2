"""Profiles and mixtures are validated on load; errors name the file and the key."""

from pathlib import Path

import pytest

from chameleon_assets.settings import ConfigError, load_mixtures, load_profile


def _profile(project: Path, text: str) -> None:
    (project / "conf" / "profiles" / "bad.yaml").write_text(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: 0\ncolour: red\n", r"bad.yaml: colour: unknown key; known keys: name, tokenizer, seed, seeds, device"),
        ("proxy:\n  train: {tokens: many}\n", r"bad.yaml: proxy.train.tokens: must be an integer \(got 'many'\)"),
        ("proxy:\n  model: {arch: rnn}\n", r"bad.yaml: proxy.model.arch: must be 'llama' or 'gpt2' \(got 'rnn'\)"),
        ("base_model:\n  model: {hidden_size: 100, num_heads: 3}\n", r"base_model.model.hidden_size: must be divisible by num_heads \(3\) \(got 100\)"),
        ("val_fraction: 1.5\n", r"bad.yaml: val_fraction: must be less than 1 \(got 1.5\)"),
        ("evaluation: {tasks: arc}\n", r"bad.yaml: evaluation.tasks: must be a list \(got 'arc'\)"),
        ("finetune: {train: {lr: -1}}\n", r"bad.yaml: finetune.train.lr: must be greater than 0 \(got -1\)"),
        ("finetune: {base: ''}\n", r"bad.yaml: finetune.base: must not be empty"),
        ("training: {launcher: torchrun, nproc_per_node: 3}\n",
         r"bad.yaml: proxy.train.batch_size: must be divisible by training.nproc_per_node \(3\): every process takes "
         r"an equal share of each batch \(got 16\)"),
        ("training: {launcher: mpirun}\n", r"bad.yaml: training.launcher: must be 'inprocess' or 'torchrun'"),
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
    bad.write_text("mixtures: [uniform, doremix]\n")
    with pytest.raises(ConfigError, match=r"mixtures.yaml: mixtures\[1\]: must be built in \(.*\), computed \(doge, doremi, "
                       r"olmix, regmix, olmix_reuse\) or a preset .* \(got 'doremix'\)"):
        load_mixtures(bad)
    bad.write_text("chameleon: {lam: 0}\n")
    with pytest.raises(ConfigError, match=r"mixtures.yaml: chameleon.lam: must be greater than 0 \(got 0\)"):
        load_mixtures(bad)


def test_finetune_mixtures_are_checked_and_have_their_own_section(project: Path) -> None:
    from chameleon_assets.sections import section_version

    bad = project / "conf" / "mixtures.yaml"
    bad.write_text("finetune_mixtures: [uniform, unimax]\n")
    with pytest.raises(ConfigError, match=r"finetune_mixtures\[1\]: must be one of uniform, natural, temperature, "
                                          r"chameleon_finetune, chameleon_pretrain or a preset"):
        load_mixtures(bad)
    bad.write_text("finetune_mixtures: [uniform, uniform]\n")
    with pytest.raises(ConfigError, match=r"finetune_mixtures\[1\]: is listed twice"):
        load_mixtures(bad)
    profile = load_profile("tiny")
    bad.write_text("finetune_mixtures: [uniform, chameleon_finetune]\n")
    one = load_mixtures(bad)
    bad.write_text("finetune_mixtures: [uniform, natural, chameleon_finetune]\nchameleon: {t_pretrain: 9.0}\n")
    two = load_mixtures(bad)
    # The finetuning list is not part of the pretraining weights' section, and T_pt is not
    # part of the finetuning one (unless chameleon_pretrain is listed there).
    assert section_version("finetune_mixing", profile, one) != section_version("finetune_mixing", profile, two)
    bad.write_text("finetune_mixtures: [uniform, natural, chameleon_finetune]\n")
    three = load_mixtures(bad)
    assert section_version("finetune_mixing", profile, two) == section_version("finetune_mixing", profile, three)
    assert section_version("mixing", profile, one) == section_version("mixing", profile, three)
