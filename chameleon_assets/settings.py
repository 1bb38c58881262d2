"""The user's knobs: profiles (``conf/profiles/<name>.yaml``) and mixtures (``conf/mixtures.yaml``).

Both are validated on load into typed dataclasses; an unknown or mistyped key is an
error naming the file and the key path. The active profile is ``$CHAMELEON_PROFILE``
(default ``cpu``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chameleon_assets import paths


class ConfigError(ValueError):
    """A configuration file is invalid; the message names the file and the key."""


@dataclass
class ModelConfig:
    """A causal LM built from scratch (``arch``: ``llama`` or ``gpt2``)."""

    arch: str = "llama"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    context_length: int = 128


@dataclass
class TrainConfig:
    """AdamW with linear warmup and cosine decay to ``min_lr_ratio * lr``."""

    tokens: int = 200_000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    compile: bool = False


@dataclass
class ProxyConfig:
    """The proxy LM: trained on the uniform mixture, or a user's local HF ``checkpoint``."""

    checkpoint: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class EmbeddingConfig:
    """``num_samples`` windows of ``sample_length`` tokens per domain, embedded at the middle layer."""

    num_samples: int = 64
    sample_length: int = 128
    batch_size: int = 32


@dataclass
class BaseModelConfig:
    """One model per mixture, same config, seed and token budget; ``mixtures``: what `make run` trains."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mixtures: list[str] = field(default_factory=lambda: ["uniform", "natural", "chameleon_pretrain"])


@dataclass
class EvaluationConfig:
    """Held-out perplexity windows and lm-eval few-shot tasks."""

    tasks: list[str] = field(default_factory=lambda: ["arc_easy_local", "piqa_local"])
    num_fewshot: int = 0
    limit: int | None = 100
    batch_size: int = 16
    ppl_windows: int = 32


@dataclass
class Profile:
    """One named profile (``cpu``: everything in ~10 minutes on 2 cores; ``gpu``: paper scale)."""

    name: str = "cpu"
    tokenizer: str = "bpe-8k"
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.05
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    base_model: BaseModelConfig = field(default_factory=BaseModelConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


@dataclass
class ChameleonParams:
    """KRLS ridge ``lam`` and the softmax temperatures of the two CHAMELEON mixtures."""

    lam: float = 10.0
    t_pretrain: float = 5.0
    t_finetune: float = 0.2


@dataclass
class MixturesConfig:
    """Which mixtures exist (``mixtures``), their parameters, and fixed presets."""

    mixtures: list[str] = field(
        default_factory=lambda: ["uniform", "natural", "temperature", "unimax", "chameleon_pretrain", "chameleon_finetune"]
    )
    chameleon: ChameleonParams = field(default_factory=ChameleonParams)
    temperature: float = 3.0
    unimax_max_epochs: float = 1.0
    unimax_budget_tokens: int | None = None
    presets: dict[str, dict[str, float]] = field(default_factory=dict)


BUILTIN_MIXTURES = ("uniform", "natural", "temperature", "unimax", "chameleon_pretrain", "chameleon_finetune")


def _build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, validating keys and scalar types."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


_YAML_CACHE: dict[tuple[str, int, int], Any] = {}


def _read_yaml(path: Path) -> Any:
    """Parse a YAML file (libyaml when available), once per process per file content.

    Cached by (path, size, mtime): observing the configuration reads every section,
    and each section reads the profile.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _YAML_CACHE:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            _YAML_CACHE[key] = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 (safe loader)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return copy.deepcopy(_YAML_CACHE[key])


def active_profile_name() -> str:
    return os.environ.get("CHAMELEON_PROFILE", "cpu")


def load_profile(name: str | None = None) -> Profile:
    """Load ``conf/profiles/<name>.yaml`` (default: ``$CHAMELEON_PROFILE`` or ``cpu``)."""
    name = name or active_profile_name()
    path = paths.conf_dir() / "profiles" / f"{name}.yaml"
    data = _read_yaml(path) or {}
    if isinstance(data, dict):
        data = {"name": name, **data}
    profile = _build(Profile, data, str(path))
    _check_profile(profile, str(path))
    return profile


def _check_profile(p: Profile, where: str) -> None:
    for label, m in (("proxy.model", p.proxy.model), ("base_model.model", p.base_model.model)):
        if m.arch not in ("llama", "gpt2"):
            raise ConfigError(f"{where}: {label}.arch: {m.arch!r} is not 'llama' or 'gpt2'")
        if m.hidden_size % m.num_heads:
            raise ConfigError(f"{where}: {label}.hidden_size {m.hidden_size} is not divisible by num_heads {m.num_heads}")
    if not 0 <= p.val_fraction < 1:
        raise ConfigError(f"{where}: val_fraction must be in [0, 1)")
    if p.embedding.sample_length > p.proxy.model.context_length and not p.proxy.checkpoint:
        raise ConfigError(f"{where}: embedding.sample_length exceeds proxy.model.context_length")


def load_mixtures(path: Path | None = None) -> MixturesConfig:
    """Load ``conf/mixtures.yaml``; every listed mixture must be built in or a preset."""
    path = path or paths.conf_dir() / "mixtures.yaml"
    cfg = _build(MixturesConfig, _read_yaml(path), str(path))
    for name in cfg.mixtures:
        if name not in BUILTIN_MIXTURES and name not in cfg.presets:
            raise ConfigError(f"{path}: mixtures: {name!r} is neither built in {BUILTIN_MIXTURES} nor a preset")
    for name, weights in cfg.presets.items():
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ConfigError(f"{path}: presets.{name}: weights must be non-negative with a positive sum")
    if cfg.chameleon.lam <= 0 or cfg.chameleon.t_pretrain <= 0 or cfg.chameleon.t_finetune <= 0:
        raise ConfigError(f"{path}: chameleon: lam, t_pretrain and t_finetune must be positive")
    if cfg.temperature <= 0 or cfg.unimax_max_epochs <= 0:
        raise ConfigError(f"{path}: temperature and unimax_max_epochs must be positive")
    if cfg.unimax_budget_tokens is not None and cfg.unimax_budget_tokens <= 0:
        raise ConfigError(f"{path}: unimax_budget_tokens must be positive, or null for the base models' budget")
    return cfg


# --- Configuration in the provenance -------------------------------------------------
# Each section is exactly the configuration one asset reads, normalised to plain data.
# Its hash is the data version of the observable source asset ``config_<section>``, so
# changing a value stales the assets that read it (and their downstream), and only those.
# ``device`` is in no section: where a model trains does not change what it is.

CONFIG_SECTIONS = ("corpus", "proxy", "embedding", "mixing", "base_model", "evaluation")


def config_section(section: str, profile: Profile, mixtures: MixturesConfig | None = None) -> dict:
    """The normalised configuration that ``section``'s asset reads (see CONFIG_SECTIONS).

    Every section that tokenises or builds a model carries the tokenizer's content
    fingerprint and the seed, so a new tokenizer stales all of them.
    """
    from chameleon_assets.core.tokenizer import tokenizer_fingerprint

    common = {"tokenizer": profile.tokenizer, "tokenizer_fingerprint": tokenizer_fingerprint(profile.tokenizer),
              "seed": profile.seed}
    if section == "corpus":
        return {**common, "val_fraction": profile.val_fraction}
    if section == "proxy":
        proxy = dataclasses.asdict(profile.proxy)
        proxy["train"] = _result_fields(proxy["train"])
        if profile.proxy.checkpoint:  # a user's model: its files are what matters, not our recipe
            proxy = {"checkpoint": profile.proxy.checkpoint, "checkpoint_fingerprint": checkpoint_fingerprint(profile)}
        return {**common, "proxy": proxy}
    if section == "embedding":
        return {**common, "embedding": _without(dataclasses.asdict(profile.embedding), "batch_size")}
    if section == "mixing":
        mixtures = mixtures or load_mixtures()
        data = dataclasses.asdict(mixtures)
        if "unimax" in mixtures.mixtures and mixtures.unimax_budget_tokens is None:
            # UniMax's weights are a function of the training budget it defaults to.
            data["unimax_budget_tokens"] = profile.base_model.train.tokens
        return data
    if section == "base_model":
        return {**common, "model": dataclasses.asdict(profile.base_model.model),
                "train": _result_fields(dataclasses.asdict(profile.base_model.train))}
    if section == "evaluation":
        return {**common, "evaluation": _without(dataclasses.asdict(profile.evaluation), "batch_size")}
    raise KeyError(f"unknown configuration section {section!r}; known: {CONFIG_SECTIONS}")


def _without(data: dict, *keys: str) -> dict:
    return {k: v for k, v in data.items() if k not in keys}


def _result_fields(train: dict) -> dict:
    """Training settings that change the trained model; not how often it is checkpointed or
    whether it is compiled (resuming and compiling reproduce the same trajectory)."""
    return _without(train, "checkpoint_every", "compile")


def section_version(section: str, profile: Profile, mixtures: MixturesConfig | None = None) -> str:
    """The data version of a configuration section: sha256 of its canonical JSON (24 hex digits)."""
    import hashlib
    import json

    data = config_section(section, profile, mixtures)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


def checkpoint_fingerprint(profile: Profile) -> str:
    """Content fingerprint of the user's proxy checkpoint folder (config and weight files)."""
    from chameleon_assets.core.fingerprint import FingerprintCache, files_fingerprint

    folder = paths.resolve(profile.proxy.checkpoint or "")
    if not folder.is_dir():
        raise ConfigError(f"proxy.checkpoint: {folder} is not a folder")
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in (".json", ".safetensors", ".bin"))
    cache = FingerprintCache(paths.fingerprint_cache())
    try:
        return files_fingerprint([(f.name, f) for f in files], cache)[:24]
    finally:
        cache.save()
