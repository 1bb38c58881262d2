"""The configuration schema: ranges, strict types and one-line errors naming file and field.

Also pins the data versions of the shipped profiles' configuration sections, which the
schema must not change.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from chameleon_assets.core.config import ModelConfig, TrainConfig
from chameleon_assets.sections import CONFIG_SECTIONS, section_version
from chameleon_assets.settings import ConfigError, load_mixtures, load_profile
from tests.conftest import TINY_PROFILE

REPO = Path(__file__).resolve().parents[1]

# The data versions (``section_version``) of every configuration section for the shipped
# profiles with the shipped conf/mixtures.yaml. They are the data versions that existing
# ``data/`` materialisations carry: if one changes, every asset reading that section is
# stale and is rebuilt although nobody changed a setting. Computed with the hand-written
# validator that preceded the pydantic schema; the schema must normalise to the same data.
# Changed on purpose since: gpu "embedding" (the reference's 2,048 windows per domain, was 1,000);
# cpu "base_model" and "finetune" (train.precision: bfloat16, a faster step on the CPU; then
# bfloat16_if_native, since on a CPU without bf16 in hardware it was ~20x slower); gpu "proxy",
# "base_model", "doremi" and "doge" (model.vocab_multiple: 64, the output layer on whole
# tensor-core tiles; never trained before); gpu "regmix" (its 64-run swarm is fitted by
# LightGBM, RegMix's own regression, no longer by the linear law; the runs stay).
# Added since: the computed methods' sections (doremi, doge, regmix_run, regmix); listing
# doremi, doge and regmix in conf/mixtures.yaml left "mixing" unchanged (mixture_weights
# does not compute them); then olmix (its fit on RegMix's runs, resolved runs and budget),
# with olmix and olmix_reuse listed in conf/mixtures.yaml ("mixing" unchanged again). Listing
# aioli (and its `methods: aioli` settings) did change cpu and gpu "mixing": mixture_weights
# computes aioli's starting row; the other mixtures' weights, and so their base models'
# versions, stay the same.
PINNED_SECTION_VERSIONS = {
    "cpu": {
        "corpus": "9c963d450a4322fb2af2c43c",
        "proxy": "e02e9d1a65a87c62b3a198c4",
        "embedding": "3e6aa07a25e2708cb53dd1ae",
        "mixing": "716522784d5a294afdc08034",
        "base_model": "f6dd484c1b9a13409cfe9814",
        "evaluation": "63966d646918466ad0a75f44",
        "finetune_mixing": "bebea581ce35b112f94cede5",
        "finetune": "681bf40be5d38fdcf476bf14",
        "doremi": "ff57a9b69d8d7acdb41b69c3",
        "doge": "b9d19034dc22e222e7f9769f",
        "regmix_run": "d5945b9f9dc9f48739936c7e",
        "regmix": "1ef4667066df0ca3253a41ba",
        "olmix": "17fd006d872d382887ce7bb2",
    },
    "gpu": {
        "corpus": "7f4b4092e87253dce321cc33",
        "proxy": "fb1facb308a61b34564b1452",
        "embedding": "67f8f297ce47cbe0e0dc48ac",
        "mixing": "7b54f3aa50871adaeda0c7d8",
        "base_model": "e8ca19a9eaaa40bae1c56c66",
        "evaluation": "4509f5c021f4bfe4bda8524d",
        "finetune_mixing": "bebea581ce35b112f94cede5",
        "finetune": "e7c9a2adfedf32cfff15ee90",
        "doremi": "eaa3db228793d256ccf9e2fd",
        "doge": "6bbf317b516bfd35e2d9309a",
        "regmix_run": "4cba114ef3422cda0f446932",
        "regmix": "3c679b039c20b9e2b8584954",
        "olmix": "6d6ece606245380a25d82266",
    },
}


@pytest.fixture
def shipped_conf(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the configuration at the repository's own conf/."""
    monkeypatch.setenv("CHAMELEON_CONF_DIR", str(REPO / "conf"))
    return REPO / "conf"


@pytest.mark.parametrize("profile", sorted(PINNED_SECTION_VERSIONS))
def test_shipped_section_versions_are_unchanged(shipped_conf: Path, profile: str) -> None:
    p, m = load_profile(profile), load_mixtures()
    assert {s: section_version(s, p, m) for s in CONFIG_SECTIONS} == PINNED_SECTION_VERSIONS[profile]


def test_shipped_profiles_and_mixtures_load(shipped_conf: Path) -> None:
    cpu, gpu, mixtures = load_profile("cpu"), load_profile("gpu"), load_mixtures()
    assert (cpu.name, gpu.name) == ("cpu", "gpu")
    assert gpu.evaluation.limit is None and "llama1" in mixtures.presets


# --- Bad values: one line naming the file and the dotted field -------------------------


def _set(data: dict, dotted: str, value: object) -> dict:
    """``data`` with the value at ``a.b.c`` replaced (intermediate mappings created)."""
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty conf dir (``profiles/`` and the shipped mixtures.yaml) that the loaders read."""
    (tmp_path / "conf" / "profiles").mkdir(parents=True)
    (tmp_path / "conf" / "mixtures.yaml").write_text((REPO / "conf" / "mixtures.yaml").read_text())
    monkeypatch.setenv("CHAMELEON_CONF_DIR", str(tmp_path / "conf"))
    return tmp_path / "conf"


def _write_profile(conf: Path, changes: dict[str, object], name: str = "bad") -> Path:
    data = yaml.safe_load(TINY_PROFILE)
    for dotted, value in changes.items():
        _set(data, dotted, value)
    path = conf / "profiles" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _write_mixtures(conf: Path, changes: dict[str, object]) -> Path:
    path = conf / "mixtures.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        _set(data, dotted, value)
    path.write_text(yaml.safe_dump(data))
    return path


def _one_line_error(exc: pytest.ExceptionInfo[ConfigError], path: Path, field: str, what: str) -> None:
    message = str(exc.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: {field}: "), message
    assert what in message and message.endswith(")") and "(got " in message, message


def test_a_learning_rate_of_zero_is_refused_on_load(conf: Path) -> None:
    """The issue's example: ``lr: 0`` used to end in a ZeroDivisionError inside training."""
    path = _write_profile(conf, {"proxy.train.lr": 0})
    with pytest.raises(ConfigError) as exc:
        load_profile("bad")
    assert str(exc.value) == f"{path}: proxy.train.lr: must be greater than 0 (got 0)"


BAD_PROFILE_VALUES = [
    # training (both the proxy's and the base models')
    ("proxy.train.lr", -1e-3, "must be greater than 0"),
    ("base_model.train.lr", 0.0, "must be greater than 0"),
    ("proxy.train.min_lr_ratio", -0.1, "greater than or equal to 0"),
    ("base_model.train.min_lr_ratio", 1.5, "less than or equal to 1"),
    ("proxy.train.tokens", 0, "greater than or equal to 1"),
    ("base_model.train.batch_size", 0, "greater than or equal to 1"),
    ("proxy.train.grad_accum", 0, "greater than or equal to 1"),
    ("proxy.train.warmup_steps", -1, "greater than or equal to 0"),
    ("proxy.train.weight_decay", -0.1, "greater than or equal to 0"),
    ("proxy.train.beta1", 1.0, "less than 1"),
    ("base_model.train.beta1", -0.5, "greater than or equal to 0"),
    ("proxy.train.beta2", 1, "less than 1"),
    ("proxy.train.grad_clip", 0, "must be greater than 0"),
    ("base_model.train.checkpoint_every", 0, "greater than or equal to 1"),
    ("proxy.train.lr", float("inf"), "must be a finite number"),
    # model shapes
    ("proxy.model.arch", "rnn", "must be 'llama' or 'gpt2'"),
    ("proxy.model.hidden_size", 0, "greater than or equal to 1"),
    ("base_model.model.num_layers", 0, "greater than or equal to 1"),
    ("proxy.model.num_heads", -2, "greater than or equal to 1"),
    ("proxy.model.intermediate_size", 0, "greater than or equal to 1"),
    ("base_model.model.context_length", 0, "greater than or equal to 1"),
    ("base_model.model.hidden_size", 33, "must be divisible by num_heads (2)"),
    # embedding
    ("embedding.num_samples", 0, "greater than or equal to 1"),
    ("embedding.sample_length", 0, "greater than or equal to 1"),
    ("embedding.batch_size", 0, "greater than or equal to 1"),
    ("embedding.dtype", "float16", "must be 'float32' or 'bfloat16' (got 'float16')"),
    ("embedding.sample_length", 64, "must not exceed proxy.model.context_length (32)"),
    # evaluation
    ("evaluation.num_fewshot", -1, "greater than or equal to 0"),
    ("evaluation.limit", 0, "greater than or equal to 1"),
    ("evaluation.batch_size", 0, "greater than or equal to 1"),
    ("evaluation.ppl_windows", 0, "greater than or equal to 1"),
    ("evaluation.tasks", "arc_easy_local", "must be a list"),
    # the computed methods' settings, each checked by its method's own Params
    ("methods.doremi.eta", 0, "greater than 0"),
    ("methods.doge.smoothing", 1.5, "less than or equal to 1"),
    ("methods.regmix.runs", 0, "greater than or equal to 1"),
    ("methods.regmix.model.hidden_size", 0, "greater than or equal to 1"),
    ("methods.regmix.colour", 1, "unknown key"),
    ("methods.olmix.lam", -0.1, "greater than or equal to 0"),
    ("methods.olmix.folds", 1, "must be at least 2"),
    ("methods.olmix.runs", 99, "must not exceed methods.regmix.runs"),
    ("methods.dorami", {}, "unknown method; methods with settings: doge, doremi, olmix, regmix"),
    # top level
    ("val_fraction", 1.0, "less than 1"),
    ("val_fraction", -0.05, "greater than or equal to 0"),
    ("device", "gpu", "must be auto, cpu, cuda, cuda:<index> or mps"),
    ("device", "cuda:first", "must be auto, cpu, cuda, cuda:<index> or mps"),
    ("seed", -1, "greater than or equal to 0"),
    ("tokenizer", "", "must not be empty"),
    ("proxy", 5, "must be a mapping"),
    # wrong types: a bool is not an integer, a string is not a number
    ("seed", True, "must be an integer (got true)"),
    ("proxy.train.tokens", False, "must be an integer (got false)"),
    ("proxy.train.tokens", 4096.0, "must be an integer (got 4096.0)"),
    ("proxy.train.lr", "abc", "must be a number (got 'abc')"),
    ("proxy.train.lr", True, "must be a number (got true)"),
    ("val_fraction", "0.1", "must be a number (got '0.1')"),
    ("proxy.train.compile", 1, "must be true or false (got 1)"),
    ("tokenizer", 8, "must be a string (got 8)"),
]


@pytest.mark.parametrize(("field", "value", "what"), BAD_PROFILE_VALUES, ids=[f"{f}={v!r}" for f, v, _ in BAD_PROFILE_VALUES])
def test_bad_profile_value_is_one_line_naming_file_and_field(conf: Path, field: str, value: object, what: str) -> None:
    path = _write_profile(conf, {field: value})
    with pytest.raises(ConfigError) as exc:
        load_profile("bad")
    _one_line_error(exc, path, field, what)


def test_bad_list_entry_names_its_position(conf: Path) -> None:
    path = _write_profile(conf, {"base_model.mixtures": ["uniform", ""]})
    with pytest.raises(ConfigError) as exc:
        load_profile("bad")
    _one_line_error(exc, path, "base_model.mixtures[1]", "must not be empty")


@pytest.mark.parametrize(
    ("field", "known"),
    [("colour", "known keys: name, tokenizer, seed, seeds, device, training, val_fraction, proxy, embedding, base_model, evaluation"),
     ("proxy.train.learning_rate", "known keys: tokens, batch_size, grad_accum, lr, min_lr_ratio, warmup_steps"),
     ("evaluation.fewshot", "known keys: tasks, num_fewshot, limit, batch_size, ppl_windows")],
)
def test_unknown_key_is_named_with_the_known_ones(conf: Path, field: str, known: str) -> None:
    path = _write_profile(conf, {field: "red"})
    with pytest.raises(ConfigError) as exc:
        load_profile("bad")
    _one_line_error(exc, path, field, f"unknown key; {known}")


def test_every_bad_field_gets_its_own_line(conf: Path) -> None:
    path = _write_profile(conf, {"proxy.train.lr": 0, "embedding.batch_size": 0, "colour": "red"})
    with pytest.raises(ConfigError) as exc:
        load_profile("bad")
    lines = str(exc.value).splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{path}: ") for line in lines)
    assert {line.split(": ")[1] for line in lines} == {"proxy.train.lr", "embedding.batch_size", "colour"}


def test_a_file_that_is_not_a_mapping_is_refused(conf: Path) -> None:
    path = conf / "profiles" / "bad.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=rf"^{path}: must be a mapping \(got \[1, 2\]\)$"):
        load_profile("bad")


@pytest.mark.parametrize(
    "changes",
    [{"proxy.train.lr": 1},  # an integer where a number is expected
     {"proxy.train.min_lr_ratio": 0, "proxy.train.warmup_steps": 0, "proxy.train.beta1": 0, "proxy.train.weight_decay": 0},
     {"proxy.train.min_lr_ratio": 1.0},
     {"evaluation.limit": None, "evaluation.num_fewshot": 5, "val_fraction": 0},
     {"device": "cuda:1"}, {"device": "mps"}, {"device": "cuda"},
     {"embedding.sample_length": 64, "proxy.checkpoint": "my-model"}],  # a checkpoint brings its own context
)
def test_boundary_values_load(conf: Path, changes: dict[str, object]) -> None:
    _write_profile(conf, changes)
    load_profile("bad")


def test_an_integer_is_accepted_as_a_float_and_becomes_one(conf: Path) -> None:
    _write_profile(conf, {"proxy.train.lr": 1, "base_model.train.grad_clip": 2})
    profile = load_profile("bad")
    assert profile.proxy.train.lr == 1.0 and isinstance(profile.proxy.train.lr, float)
    assert isinstance(dataclasses.asdict(profile)["base_model"]["train"]["grad_clip"], float)


def test_the_schema_also_checks_objects_built_in_code() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ModelConfig(hidden_size=30, num_heads=4)
    assert dataclasses.asdict(TrainConfig(lr=1))["lr"] == 1.0


# --- mixtures.yaml ---------------------------------------------------------------------

BAD_MIXTURE_VALUES = [
    ("chameleon.lam", 0, "must be greater than 0"),
    ("chameleon.t_pretrain", -1.0, "must be greater than 0"),
    ("chameleon.t_finetune", 0.0, "must be greater than 0"),
    ("temperature", 0, "must be greater than 0"),
    ("unimax_max_epochs", -1, "must be greater than 0"),
    ("unimax_budget_tokens", 0, "greater than or equal to 1"),
    ("unimax_budget_tokens", True, "must be an integer (got true)"),
    ("chameleon.lam", "ten", "must be a number (got 'ten')"),
    ("presets.llama1.c4", -0.1, "greater than or equal to 0"),
    ("presets.llama1.c4", "many", "must be a number"),
    ("mixtures", "uniform", "must be a list"),
    ("chameleon.ridge", "scaled", "must be 'absolute' or 'relative' (got 'scaled')"),
    ("chameleon.ridge", 1.0, "must be 'absolute' or 'relative' (got 1.0)"),
    ("chameleon.rigde", "relative", "unknown key; known keys: lam, t_pretrain, t_finetune, ridge"),
]


@pytest.mark.parametrize(("field", "value", "what"), BAD_MIXTURE_VALUES, ids=[f"{f}={v!r}" for f, v, _ in BAD_MIXTURE_VALUES])
def test_bad_mixtures_value_is_one_line_naming_file_and_field(conf: Path, field: str, value: object, what: str) -> None:
    path = _write_mixtures(conf, {field: value})
    with pytest.raises(ConfigError) as exc:
        load_mixtures()
    _one_line_error(exc, path, field, what)


@pytest.mark.parametrize(
    ("changes", "field", "what"),
    [({"mixtures": ["uniform", "doremix"]}, "mixtures[1]", "must be built in (uniform, natural"),
     ({"mixtures": ["uniform", "natural", "uniform"]}, "mixtures[2]", "is listed twice"),
     ({"mixtures": ["uniform", ""]}, "mixtures[1]", "must not be empty"),
     ({"presets.zero": {"a": 0, "b": 0.0}}, "presets.zero", "weights must have a positive sum")],
)
def test_mixture_lists_and_presets_are_checked(conf: Path, changes: dict, field: str, what: str) -> None:
    path = _write_mixtures(conf, changes)
    with pytest.raises(ConfigError) as exc:
        load_mixtures()
    _one_line_error(exc, path, field, what)


def test_a_preset_can_be_listed_and_the_budget_left_to_the_base_models(conf: Path) -> None:
    _write_mixtures(conf, {"mixtures": ["uniform", "llama1"], "unimax_budget_tokens": None, "temperature": 2})
    cfg = load_mixtures()
    assert cfg.mixtures == ["uniform", "llama1"] and cfg.temperature == 2.0 and cfg.unimax_budget_tokens is None


def test_a_default_written_out_keeps_the_section_version_and_another_value_changes_it(conf: Path) -> None:
    """``chameleon.ridge``, ``embedding.dtype`` and ``train.precision`` came after data was
    materialised: their defaults (the meaning before they existed) hash as if absent, so an
    upgrade restales nothing; ``training`` (how many processes train) is in no section."""
    sections = ("embedding", "mixing", "base_model", "finetune")
    _write_profile(conf, {}, name="plain")
    before = {s: section_version(s, load_profile("plain"), load_mixtures()) for s in sections}
    _write_profile(conf, {"embedding.dtype": "float32", "base_model.train.precision": "auto",
                          "finetune.train.precision": "auto", "training": {"nproc_per_node": 2}}, name="plain")
    _write_mixtures(conf, {"chameleon.ridge": "absolute"})
    assert {s: section_version(s, load_profile("plain"), load_mixtures()) for s in sections} == before
    _write_profile(conf, {"embedding.dtype": "bfloat16", "base_model.train.precision": "bfloat16",
                          "finetune.train.precision": "float32"}, name="plain")
    _write_mixtures(conf, {"chameleon.ridge": "relative"})
    after = {s: section_version(s, load_profile("plain"), load_mixtures()) for s in sections}
    assert all(after[s] != before[s] for s in sections), (before, after)
