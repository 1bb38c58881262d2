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
from chameleon_assets.core.methods.chameleon import KRLSParams
from chameleon_assets.core.methods.closed_form import Temperature, UniMax
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
    processes under ``torchrun``, launched through Dagster Pipes (docs/pages/scaling.md).

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
    # The domain registry this profile runs on (relative: the repository root), for a profile
    # made for one corpus (gpu-paper: SlimPajama); $CHAMELEON_REGISTRY wins over it, and
    # without either it is conf/domains.yaml. In no section: the domains' own data versions
    # already say what they hold.
    registry: NonEmptyStr | None = None

    @model_validator(mode="after")
    def _methods_are_known(self) -> Profile:
        from chameleon_assets.core.methods import trained_methods

        known = trained_methods()
        for name, values in self.methods.items():
            if name not in known:
                raise _invalid(f"methods.{name}", f"unknown method; methods with settings: {', '.join(known)}", name)
            _check_method_values(f"methods.{name}", name, values)
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


# The mixtures listed by default, in this order (also how error messages list them).
BUILTIN_MIXTURES = ("uniform", "natural", "temperature", "unimax", "chameleon_pretrain", "chameleon_finetune")
FINETUNE_MIXTURES = ("uniform", "natural", "temperature", "chameleon_finetune", "chameleon_pretrain")


def closed_form_mixtures(stage: str) -> tuple[str, ...]:
    """The closed-form methods that can be listed as ``stage``'s mixtures: the built-in ones
    in their usual order, then any other registered (``core.methods.closed_form_methods``)."""
    from chameleon_assets.core.methods import closed_form_methods

    known = closed_form_methods(stage)
    usual = BUILTIN_MIXTURES if stage == "pretrain" else FINETUNE_MIXTURES
    return tuple(n for n in usual if n in known) + tuple(n for n in known if n not in usual)


@dataclass(config=SCHEMA)
class MixturesConfig:
    """Which mixtures exist (``mixtures``: closed-form, computed by a method that trains, or
    a preset; no duplicates), their parameters, and fixed presets (non-negative weights with
    a positive sum). ``finetune_mixtures``: the mixtures over the finetuning domains
    (``finetune_weights``). ``methods``: the settings of closed-form methods other than the
    built-in ones (whose settings are the keys above), each checked by its ``Params``."""

    mixtures: list[NonEmptyStr] = field(default_factory=lambda: list(BUILTIN_MIXTURES))
    finetune_mixtures: list[NonEmptyStr] = field(
        default_factory=lambda: ["uniform", "natural", "chameleon_finetune"])
    chameleon: KRLSParams = field(default_factory=KRLSParams)
    # The built-in methods' settings keep their historical keys; their defaults are the methods' own.
    temperature: PositiveFloat = Temperature.Params.t
    unimax_max_epochs: PositiveFloat = UniMax.Params.max_epochs
    unimax_budget_tokens: PositiveInt | None = None
    presets: dict[NonEmptyStr, dict[NonEmptyStr, NonNegativeFloat]] = field(default_factory=dict)
    methods: dict[NonEmptyStr, dict[NonEmptyStr, Any]] = field(default_factory=dict)

    @model_validator(mode="after")
    def _mixtures_are_known(self) -> MixturesConfig:
        seen: set[str] = set()
        closed_form, computed = closed_form_mixtures("pretrain"), computed_mixtures()
        for i, name in enumerate(self.mixtures):
            if name in seen:
                raise _invalid(f"mixtures[{i}]", "is listed twice", name)
            seen.add(name)
            if name not in closed_form and name not in self.presets and name not in computed:
                raise _invalid(f"mixtures[{i}]", f"must be built in ({', '.join(closed_form)}), computed "
                               f"({', '.join(computed)}) or a preset "
                               f"({', '.join(self.presets) or 'none defined'})", name)
        finetune = closed_form_mixtures("finetune")
        for i, name in enumerate(self.finetune_mixtures):
            if name in self.finetune_mixtures[:i]:
                raise _invalid(f"finetune_mixtures[{i}]", "is listed twice", name)
            if name not in finetune and name not in self.presets:
                raise _invalid(f"finetune_mixtures[{i}]", f"must be one of {', '.join(finetune)} "
                               f"or a preset ({', '.join(self.presets) or 'none defined'})", name)
        for name, weights in self.presets.items():
            if sum(weights.values()) <= 0:
                raise _invalid(f"presets.{name}", "weights must have a positive sum", weights)
        everything = set(closed_form) | set(finetune)
        for name, values in self.methods.items():
            if name not in everything:
                raise _invalid(f"methods.{name}", f"unknown closed-form method; known: {', '.join(sorted(everything))}",
                               name)
            _check_method_values(f"methods.{name}", name, values)
        return self


def _check_method_values(where: str, name: str, values: dict) -> None:
    """Raise the one-line error (``where``: the dotted key) for the first problem with
    ``values`` as method ``name``'s ``Params``."""
    try:
        _method_params(name, values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _dotted(tuple(err["loc"]))
        kind = err["type"]
        error = (err.get("ctx") or {}).get("error")
        if kind == "value_error" and isinstance(error, InvalidSetting):
            loc = f"{loc}.{error.field}" if loc else error.field
            raise _invalid(f"{where}.{loc}", error.message, error.got) from None
        message = ("unknown key" if kind in ("unexpected_keyword_argument", "extra_forbidden")
                   else _MESSAGES.get(kind) or err["msg"].removeprefix("Value error, ").replace(
                       "Input should be", "must be"))
        raise _invalid(where + (f".{loc}" if loc else ""), message, err["input"]) from None


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


def mixture_method_params(mixtures: MixturesConfig, name: str, budget_tokens: int) -> Any:
    """The ``Params`` of closed-form method ``name`` from conf/mixtures.yaml (the method
    says where its settings are: ``mixture_settings``); ``budget_tokens``: the base models'."""
    from chameleon_assets.core.methods import get

    return _method_params(name, get(name).mixture_settings(dataclasses.asdict(mixtures), budget_tokens))


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
