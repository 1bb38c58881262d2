"""The user's knobs: profiles (``conf/profiles/<name>.yaml``) and mixtures (``conf/mixtures.yaml``).

Both are validated on load by a schema: pydantic dataclasses that forbid unknown keys,
check types strictly (``true`` is not an integer, ``"abc"`` is not a number; an integer
is accepted where a number is expected) and check ranges (a learning rate must be
positive, a batch size at least 1, ...). A bad file raises ``ConfigError`` with one line
per problem: ``<file>: <dotted.field>: <what is wrong> (got <value>)``. The loaded objects
are plain dataclasses to the rest of the code (attributes, ``dataclasses.asdict``). The
active profile is ``$CHAMELEON_PROFILE`` (default ``cpu``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import typing
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, ConfigDict, TypeAdapter, ValidationError
from pydantic import model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from chameleon_assets import paths
from chameleon_assets.core.config import EmbeddingConfig, ModelConfig, TrainConfig
from chameleon_assets.core.schema import (HalfOpenUnitInterval, InvalidSetting, NonEmptyStr, NonNegativeFloat,
                                          NonNegativeInt, PositiveFloat, PositiveInt, StrictStr)


class ConfigError(ValueError):
    """A configuration file is invalid; one line per problem, naming the file and the field."""


# --- Field types -----------------------------------------------------------------------
# The scalar types (strict: YAML's ``true`` is not an integer and ``"3"`` is not a number,
# but an integer is a valid float and becomes one; floats must be finite) and the settings
# of the science (model, training, embedding, each method's ``Params``) are declared in
# ``core`` beside the code that uses them (``core.schema``); this module composes them
# into profiles and reads them from YAML.

_DEVICE = re.compile(r"auto|(cpu|cuda|mps)(:\d+)?")


def _check_device(value: str) -> str:
    if not _DEVICE.fullmatch(value):
        raise PydanticCustomError("device", "must be auto, cpu, cuda, cuda:<index> or mps")
    return value


Device = Annotated[StrictStr, AfterValidator(_check_device)]

SCHEMA = ConfigDict(extra="forbid")


def _invalid(field_path: str, message: str, got: Any) -> PydanticCustomError:
    """A cross-field error: ``field_path`` (dotted, relative to the validated object) and ``got``
    end up in the one-line message (see ``_describe``)."""
    return PydanticCustomError("invalid_setting", "{message}", {"message": message, "field": field_path, "got": got})


@dataclass(config=SCHEMA)
class ProxyConfig:
    """The proxy LM: trained on the uniform mixture, or a user's local HF ``checkpoint``."""

    checkpoint: StrictStr | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(config=SCHEMA)
class BaseModelConfig:
    """One model per mixture, same config, seed and token budget; ``mixtures``: what `make run` trains."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mixtures: list[NonEmptyStr] = field(default_factory=lambda: ["uniform", "natural", "chameleon_pretrain"])


@dataclass(config=SCHEMA)
class EvaluationConfig:
    """Held-out perplexity windows and lm-eval few-shot tasks (``limit``: examples per task, null for all)."""

    tasks: list[NonEmptyStr] = field(default_factory=lambda: ["arc_easy_local", "piqa_local"])
    num_fewshot: NonNegativeInt = 0
    limit: PositiveInt | None = 100
    batch_size: PositiveInt = 16
    ppl_windows: PositiveInt = 32


@dataclass(config=SCHEMA)
class FinetuneConfig:
    """Continued training on the finetuning domains, one model per (finetune mixture, seed).

    The starting point of seed ``s`` is ``base_model[<base>|<s>]`` of this pipeline, or,
    with ``checkpoint``, a local Hugging Face causal-LM folder (every seed starts from it).
    ``mixtures``: what `make run` finetunes (each must be in ``finetune_mixtures`` of
    conf/mixtures.yaml). Every finetuned model uses the same ``train`` budget and schedule.
    """

    base: NonEmptyStr = "uniform"
    checkpoint: StrictStr | None = None
    mixtures: list[NonEmptyStr] = field(default_factory=lambda: ["uniform", "natural", "chameleon_finetune"])
    train: TrainConfig = field(default_factory=lambda: TrainConfig(tokens=200_000, lr=1e-3, warmup_steps=10))


@dataclass(config=SCHEMA)
class TrainingLaunch:
    """How training runs: in the Dagster step's process, or as ``nproc_per_node`` DDP
    processes under ``torchrun``, launched through Dagster Pipes (README, "Scaling out").

    Like ``device``, this is in no configuration section: how a model is trained does not
    change what it is (the global batch, schedule and sample stream are the same for any
    number of processes; only floating-point rounding differs).
    """

    launcher: Literal["inprocess", "torchrun"] = "inprocess"
    nproc_per_node: PositiveInt = 1

    @property
    def distributed(self) -> bool:
        return self.launcher == "torchrun" or self.nproc_per_node > 1


@dataclass(config=SCHEMA)
class Profile:
    """One named profile (``cpu``: everything in ~10 minutes on 2 cores; ``gpu``: paper scale)."""

    name: NonEmptyStr = "cpu"
    tokenizer: NonEmptyStr = "bpe-8k"
    seed: NonNegativeInt = 0  # the proxy's initialisation and sampling, the embedding windows, the val split
    seeds: list[NonNegativeInt] = field(default_factory=lambda: [0])  # one base model per (mixture, seed)
    device: Device = "auto"
    training: TrainingLaunch = field(default_factory=TrainingLaunch)
    val_fraction: HalfOpenUnitInterval = 0.05
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    base_model: BaseModelConfig = field(default_factory=BaseModelConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # Settings of the mixing methods that train proxies (DoReMi, DoGE, RegMix), by method
    # name; each entry is validated by that method's own ``Params`` (``core.methods``).
    methods: dict[NonEmptyStr, dict[NonEmptyStr, Any]] = field(default_factory=dict)

    @model_validator(mode="after")
    def _methods_are_known(self) -> Profile:
        from chameleon_assets.core.methods import trained_methods

        known = trained_methods()
        for name, values in self.methods.items():
            if name not in known:
                raise _invalid(f"methods.{name}", f"unknown method; methods with settings: {', '.join(known)}", name)
            try:
                _method_params(name, values)
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = _dotted(tuple(err["loc"]))
                kind = err["type"]
                error = (err.get("ctx") or {}).get("error")
                if kind == "value_error" and isinstance(error, InvalidSetting):
                    loc = f"{loc}.{error.field}" if loc else error.field
                    raise _invalid(f"methods.{name}.{loc}", error.message, error.got) from None
                message = ("unknown key" if kind in ("unexpected_keyword_argument", "extra_forbidden")
                           else _MESSAGES.get(kind) or err["msg"].removeprefix("Value error, ").replace(
                               "Input should be", "must be"))
                raise _invalid(f"methods.{name}" + (f".{loc}" if loc else ""), message, err["input"]) from None
        return self

    @model_validator(mode="after")
    def _batches_split_evenly(self) -> Profile:
        n = self.training.nproc_per_node
        for section in ("proxy", "base_model", "finetune"):
            batch = getattr(self, section).train.batch_size
            if batch % n:
                raise _invalid(f"{section}.train.batch_size", f"must be divisible by training.nproc_per_node ({n}): "
                               "every process takes an equal share of each batch", batch)
        return self

    @model_validator(mode="after")
    def _seeds_are_distinct(self) -> Profile:
        if not self.seeds:
            raise _invalid("seeds", "must name at least one seed", self.seeds)
        for i, s in enumerate(self.seeds):
            if s in self.seeds[:i]:
                raise _invalid(f"seeds[{i}]", "is listed twice", s)
        return self

    @model_validator(mode="after")
    def _windows_fit_the_proxy(self) -> Profile:
        # A user's checkpoint brings its own context length, checked when it is loaded.
        if self.embedding.sample_length > self.proxy.model.context_length and not self.proxy.checkpoint:
            raise _invalid("embedding.sample_length",
                           f"must not exceed proxy.model.context_length ({self.proxy.model.context_length})",
                           self.embedding.sample_length)
        return self


@dataclass(config=SCHEMA)
class ChameleonParams:
    """KRLS ridge ``lam`` and the softmax temperatures of the two CHAMELEON mixtures.

    ``ridge``: how ``lam`` is read. ``absolute`` (the paper's): tau_i = [K_c (K_c + lam k I)^-1]_ii.
    ``relative`` (scale-free): lam is in units of trace(K_c) / k, the mean eigenvalue of
    K_c, so the ridge is lam * trace(K_c) and the weights do not depend on the proxy's
    embedding scale (``core.krls.effective_lambda``).
    """

    lam: PositiveFloat = 10.0
    t_pretrain: PositiveFloat = 5.0
    t_finetune: PositiveFloat = 0.2
    ridge: Literal["absolute", "relative"] = "absolute"


BUILTIN_MIXTURES = ("uniform", "natural", "temperature", "unimax", "chameleon_pretrain", "chameleon_finetune")
# Over the finetuning domains (``finetune_weights``); UniMax needs a pretraining budget.
FINETUNE_MIXTURES = ("uniform", "natural", "temperature", "chameleon_finetune", "chameleon_pretrain")


@dataclass(config=SCHEMA)
class MixturesConfig:
    """Which mixtures exist (``mixtures``: built in or a preset, no duplicates), their
    parameters, and fixed presets (non-negative weights with a positive sum).
    ``finetune_mixtures``: the mixtures over the finetuning domains (``finetune_weights``)."""

    mixtures: list[NonEmptyStr] = field(default_factory=lambda: list(BUILTIN_MIXTURES))
    finetune_mixtures: list[NonEmptyStr] = field(
        default_factory=lambda: ["uniform", "natural", "chameleon_finetune"])
    chameleon: ChameleonParams = field(default_factory=ChameleonParams)
    temperature: PositiveFloat = 3.0
    unimax_max_epochs: PositiveFloat = 1.0
    unimax_budget_tokens: PositiveInt | None = None
    presets: dict[NonEmptyStr, dict[NonEmptyStr, NonNegativeFloat]] = field(default_factory=dict)

    @model_validator(mode="after")
    def _mixtures_are_known(self) -> MixturesConfig:
        seen: set[str] = set()
        for i, name in enumerate(self.mixtures):
            if name in seen:
                raise _invalid(f"mixtures[{i}]", "is listed twice", name)
            seen.add(name)
            if name not in BUILTIN_MIXTURES and name not in self.presets and name not in computed_mixtures():
                raise _invalid(f"mixtures[{i}]", f"must be built in ({', '.join(BUILTIN_MIXTURES)}), computed "
                               f"({', '.join(computed_mixtures())}) or a preset "
                               f"({', '.join(self.presets) or 'none defined'})", name)
        for i, name in enumerate(self.finetune_mixtures):
            if name in self.finetune_mixtures[:i]:
                raise _invalid(f"finetune_mixtures[{i}]", "is listed twice", name)
            if name not in FINETUNE_MIXTURES and name not in self.presets:
                raise _invalid(f"finetune_mixtures[{i}]", f"must be one of {', '.join(FINETUNE_MIXTURES)} "
                               f"or a preset ({', '.join(self.presets) or 'none defined'})", name)
        for name, weights in self.presets.items():
            if sum(weights.values()) <= 0:
                raise _invalid(f"presets.{name}", "weights must have a positive sum", weights)
        return self


def _method_params(name: str, values: dict) -> Any:
    """``values`` validated by method ``name``'s own ``Params`` (raises pydantic's ValidationError)."""
    from chameleon_assets.core.methods import get

    cls = get(name).Params
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls].validate_python(values or {})


def method_params(profile: Profile, name: str) -> Any:
    """The settings of mixing method ``name`` in ``profile`` (its ``Params``, defaults where unset)."""
    return _method_params(name, profile.methods.get(name, {}))


def computed_mixtures() -> tuple[str, ...]:
    """Mixtures computed by methods that train proxies (``core.methods.trained_methods``),
    valid in conf/mixtures.yaml's ``mixtures`` beside the built-in ones."""
    from chameleon_assets.core.methods import trained_methods

    return tuple(trained_methods())


# --- Loading and error messages --------------------------------------------------------

_ADAPTERS: dict[type, TypeAdapter] = {}

# Pydantic error types whose message reads better in the file's own terms.
_MESSAGES = {
    "dataclass_type": "must be a mapping",
    "dataclass_exact_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "finite_number": "must be a finite number",
}


def _validate(cls: type, data: Any, path: Path) -> Any:
    """Validate ``data`` (parsed YAML) into ``cls``, or raise ``ConfigError`` with one line per problem."""
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    try:
        return _ADAPTERS[cls].validate_python({} if data is None else data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(err, cls, path) for err in exc.errors())) from None


def _describe(err: Any, root: type, path: Path) -> str:
    """One pydantic error as ``<file>: <dotted.field>: <what is wrong> (got <value>)``."""
    loc, kind, got = tuple(err["loc"]), err["type"], err["input"]
    ctx = err.get("ctx") or {}
    where = _dotted(loc)
    if kind == "value_error" and isinstance(ctx.get("error"), InvalidSetting):  # a core type's own check
        kind, ctx = "invalid_setting", vars(ctx["error"])
    if kind == "invalid_setting":
        where = f"{where}.{ctx['field']}" if where else ctx["field"]
        message, got = ctx["message"], ctx["got"]
    elif kind in ("unexpected_keyword_argument", "extra_forbidden"):
        known = _known_keys(root, loc[:-1])
        message = "unknown key" + (f"; known keys: {', '.join(known)}" if known else "")
    elif kind in _MESSAGES:
        message = _MESSAGES[kind]
    else:
        message = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    return f"{path}: {where}: {message} (got {_show(got)})" if where else f"{path}: {message} (got {_show(got)})"


def _dotted(loc: tuple) -> str:
    """``('proxy', 'train', 'lr')`` -> ``proxy.train.lr``; list positions as ``[i]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _known_keys(root: type, loc: tuple) -> list[str]:
    """The keys the mapping at ``loc`` accepts (its dataclass's fields), or [] if unknown."""
    cls: Any = root
    for part in loc:
        if not (dataclasses.is_dataclass(cls) and isinstance(part, str)):
            return []
        cls = typing.get_type_hints(cls).get(part)
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, shortened to one short line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


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
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
            raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from exc
    return copy.deepcopy(_YAML_CACHE[key])


def active_profile_name() -> str:
    """The profile in use: ``$CHAMELEON_PROFILE``, default ``cpu``."""
    return os.environ.get("CHAMELEON_PROFILE", "cpu")


def profile_path(name: str) -> Path:
    """The file of profile ``name``: ``<conf>/profiles/<name>.yaml``."""
    return paths.conf_dir() / "profiles" / f"{name}.yaml"


def load_profile(name: str | None = None) -> Profile:
    """Load and validate ``conf/profiles/<name>.yaml`` (default: ``$CHAMELEON_PROFILE`` or ``cpu``).

    Raises ``ConfigError`` (one line per problem, naming the file and the field) if the
    file is missing, not YAML, or breaks the schema.
    """
    name = name or active_profile_name()
    path = profile_path(name)
    data = _read_yaml(path) or {}
    if isinstance(data, dict):
        data = {"name": name, **data}
    return _validate(Profile, data, path)


def load_mixtures(path: Path | None = None) -> MixturesConfig:
    """Load and validate ``conf/mixtures.yaml``; every listed mixture must be built in or a preset.

    Raises ``ConfigError`` like ``load_profile``.
    """
    path = path or paths.conf_dir() / "mixtures.yaml"
    return _validate(MixturesConfig, _read_yaml(path), path)


# --- Configuration in the provenance -------------------------------------------------
# Each section is exactly the configuration one asset reads, normalised to plain data.
# Its hash is the data version of the observable source asset ``config_<section>``, so
# changing a value stales the assets that read it (and their downstream), and only those.
# ``device`` and ``training`` are in no section: where and by how many processes a model
# trains does not change what it is.

CONFIG_SECTIONS = ("corpus", "proxy", "embedding", "mixing", "base_model", "evaluation", "finetune_mixing",
                   "finetune", "doremi", "doge", "regmix_run", "regmix")
# RegMix is split in two: what one swarm run reads (``regmix_run``: the run's model, budget,
# sampling and scoring) and what the fit reads (``regmix``): so adding runs, or changing
# the target or the candidate search, retrains no run.
REGMIX_FIT_FIELDS = ("runs", "target", "candidates", "top_k")


def config_section(section: str, profile: Profile, mixtures: MixturesConfig | None = None) -> dict:
    """The normalised configuration that ``section``'s asset reads (see CONFIG_SECTIONS).

    Every section that tokenises or builds a model carries the tokenizer's content
    fingerprint, so a new tokenizer stales all of them, and those of the proxy and the
    data carry ``seed``; base models and evaluations have their seed in their partition.
    """
    from chameleon_assets.core.tokenizer import tokenizer_fingerprint

    common = {"tokenizer": profile.tokenizer, "tokenizer_fingerprint": tokenizer_fingerprint(profile.tokenizer),
              "seed": profile.seed}
    if section == "corpus":
        return {**common, "val_fraction": profile.val_fraction}
    if section == "proxy":
        proxy = dataclasses.asdict(profile.proxy)
        proxy["model"], proxy["train"] = _model_fields(proxy["model"]), _result_fields(proxy["train"])
        if profile.proxy.checkpoint:  # a user's model: its files are what matters, not our recipe
            proxy = {"checkpoint": profile.proxy.checkpoint, "checkpoint_fingerprint": checkpoint_fingerprint(profile)}
        return {**common, "proxy": proxy}
    if section == "embedding":
        embedding = _without(dataclasses.asdict(profile.embedding), "batch_size")
        # float32 is what every CPU and MPS run computed before `dtype` existed (CUDA ran
        # under bfloat16 autocast; the shipped gpu profile's section changed with it anyway).
        return {**common, "embedding": _unless_default(embedding, "dtype", "float32")}
    if section == "mixing":
        mixtures = mixtures or load_mixtures()
        data = _without(dataclasses.asdict(mixtures), "finetune_mixtures")  # finetune_mixing's
        # Mixtures computed by methods that train proxies are not mixture_weights' to compute.
        data["mixtures"] = [m for m in data["mixtures"] if m not in computed_mixtures()]
        data["presets"] = {n: w for n, w in data["presets"].items() if n in pretraining_presets(mixtures)}
        data["chameleon"] = _unless_default(data["chameleon"], "ridge", "absolute")
        if "unimax" in mixtures.mixtures and mixtures.unimax_budget_tokens is None:
            # UniMax's weights are a function of the training budget it defaults to.
            data["unimax_budget_tokens"] = profile.base_model.train.tokens
        return data
    if section == "finetune_mixing":
        mixtures = mixtures or load_mixtures()
        names = mixtures.finetune_mixtures
        chameleon = _unless_default(_without(dataclasses.asdict(mixtures.chameleon), "t_pretrain"), "ridge",
                                    "absolute")
        if "chameleon_pretrain" in names:
            chameleon["t_pretrain"] = mixtures.chameleon.t_pretrain
        data = {"finetune_mixtures": names, "chameleon": chameleon,
                "presets": {n: mixtures.presets[n] for n in names if n in mixtures.presets}}
        if "temperature" in names:
            data["temperature"] = mixtures.temperature
        return data
    # Base models and their evaluations take their seed from their partition (``seeds``):
    # adding a seed adds partitions and stales none, so neither seed key is in these two.
    per_seed = _without(common, "seed")
    if section == "base_model":
        return {**per_seed, "model": _model_fields(dataclasses.asdict(profile.base_model.model)),
                "train": _result_fields(dataclasses.asdict(profile.base_model.train))}
    if section == "evaluation":
        return {**per_seed, "evaluation": _without(dataclasses.asdict(profile.evaluation), "batch_size")}
    if section == "finetune":
        # The start model's own version is part of each finetuned model's data version
        # (it differs per seed); here only which start, and the finetuning recipe.
        ft = profile.finetune
        start = ({"checkpoint": ft.checkpoint, "checkpoint_fingerprint": checkpoint_fingerprint(profile, ft.checkpoint,
                                                                                              "finetune.checkpoint")}
                 if ft.checkpoint else {"base": ft.base})
        return {**per_seed, **start, "context_length": profile.base_model.model.context_length,
                "train": _result_fields(dataclasses.asdict(ft.train))}
    if section in ("doremi", "doge"):
        # They train proxies of the proxy's size and budget (its model and training recipe).
        recipe = {"model": _model_fields(dataclasses.asdict(profile.proxy.model)),
                  "train": _result_fields(dataclasses.asdict(profile.proxy.train))}
        return {**common, **recipe, "method": section, "params": dataclasses.asdict(method_params(profile, section))}
    if section in ("regmix_run", "regmix"):
        params = dataclasses.asdict(method_params(profile, "regmix"))
        params["model"], params["train"] = _model_fields(params["model"]), _result_fields(params["train"])
        fit = {k: params.pop(k) for k in REGMIX_FIT_FIELDS}
        return {**common, "params": params} if section == "regmix_run" else {"params": fit}
    raise KeyError(f"unknown configuration section {section!r}; known: {CONFIG_SECTIONS}")


def pretraining_presets(mixtures: MixturesConfig) -> list[str]:
    """The presets mixture_weights considers: all but those listed only under ``finetune_mixtures``
    (a preset written for the finetuning domains neither changes nor stales the pretraining weights)."""
    return [n for n in mixtures.presets if n in mixtures.mixtures or n not in mixtures.finetune_mixtures]


def _without(data: dict, *keys: str) -> dict:
    return {k: v for k, v in data.items() if k not in keys}


def _unless_default(data: dict, key: str, default: object) -> dict:
    """``data`` without ``key`` when it holds ``default``.

    For a key added after data had been materialised, whose default is what the section
    meant before the key existed (``chameleon.ridge: absolute``, ``embedding.dtype:
    float32``): the section's hash, and so every existing data version, stays the same,
    while any other value is hashed and stales what reads the section.
    """
    return _without(data, key) if data.get(key) == default else data


def _result_fields(train: dict) -> dict:
    """Training settings that change the trained model; not how often it is checkpointed,
    whether it is compiled or how its loss is computed (resuming, compiling and either loss
    reproduce the same trajectory up to rounding). ``precision: auto`` (what every model
    was trained with before the key existed) is left out, so existing versions stay valid;
    an explicit precision is hashed."""
    return _unless_default(_without(train, "checkpoint_every", "compile", "loss"), "precision", "auto")


def _model_fields(model: dict) -> dict:
    """A model's settings as hashed: ``vocab_multiple: 1`` (no padding, what every model was
    before the key existed) is left out, so existing versions stay valid."""
    return _unless_default(model, "vocab_multiple", 1)


def section_version(section: str, profile: Profile, mixtures: MixturesConfig | None = None) -> str:
    """The data version of a configuration section: sha256 of its canonical JSON (24 hex digits)."""
    import hashlib
    import json

    data = config_section(section, profile, mixtures)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


def checkpoint_fingerprint(profile: Profile, checkpoint: str | None = None, field_name: str = "proxy.checkpoint") -> str:
    """Content fingerprint of a user's checkpoint folder (config and weight files): the
    proxy's (default) or ``checkpoint``, named ``field_name`` in errors."""
    from chameleon_assets.core.fingerprint import FingerprintCache, files_fingerprint

    given = checkpoint if checkpoint is not None else profile.proxy.checkpoint
    folder = paths.resolve(given or "")
    if not folder.is_dir():
        raise ConfigError(f"{profile_path(profile.name)}: {field_name}: {folder} is not a folder "
                          f"(got {_show(given)})")
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in (".json", ".safetensors", ".bin"))
    cache = FingerprintCache(paths.fingerprint_cache())
    try:
        return files_fingerprint([(f.name, f) for f in files], cache)[:24]
    finally:
        cache.save()
