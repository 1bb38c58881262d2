"""The configuration sections: each declared once, with what it holds, what it means and
which assets read it.

A section is exactly the configuration some assets read, normalised to plain data. Its
hash is the data version of the observable source asset ``config_<section>``, and the
assets in its ``read_by`` take that source as an input (``defs.sources.config_deps``), so
changing a value stales the assets that read it (and their downstream), and only those.
``device`` and ``training`` are in no section: where and by how many processes a model
trains does not change what it is.

Every section that tokenises or builds a model carries the tokenizer's content
fingerprint, so a new tokenizer stales all of them, and those of the proxy and the data
carry ``seed``; base models and evaluations have their seed in their partition.

The fixed sections are declared below with ``@section``. The mixing methods that train
declare theirs (``core.methods``): a section ``<method>`` of the profile's
``methods.<method>`` (with the proxy's recipe when the method trains proxies of it), or
for a swarm method two: ``<method>_run`` (what one run reads) and ``<method>`` (what only
the fit reads), so adding runs or refitting retrains no run. A method that fits another's
swarm (Olmix on RegMix's) has one section ``<method>``, its settings with their defaults
resolved (``settings.fit_params``), read by its weights and those it ``also_serves``; those
assets read the swarm's ``<swarm>_run`` section too (they check which runs are current).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Callable

from chameleon_assets.settings import (MixturesConfig, Profile, checkpoint_fingerprint, computed_mixtures,
                                       fit_params, load_mixtures, method_params)


@dataclass(frozen=True)
class Section:
    """One configuration section: ``content(profile, mixtures)`` is the normalised data
    hashed into its version, ``doc`` what it holds (shown on ``config_<name>`` in the UI),
    ``read_by`` the assets that read it."""

    name: str
    doc: str
    read_by: tuple[str, ...]
    content: Callable[[Profile, MixturesConfig | None], dict]


_FIXED: dict[str, Section] = {}


def section(name: str, doc: str, read_by: tuple[str, ...]) -> Callable:
    """Declare the section ``name`` whose content the decorated function computes."""
    def declare(content: Callable[[Profile, MixturesConfig | None], dict]) -> Callable:
        _FIXED[name] = Section(name, doc, read_by, content)
        return content
    return declare


def _common(profile: Profile) -> dict:
    from chameleon_assets.core.tokenizer import tokenizer_fingerprint

    return {"tokenizer": profile.tokenizer, "tokenizer_fingerprint": tokenizer_fingerprint(profile.tokenizer),
            "seed": profile.seed}


def _per_seed(profile: Profile) -> dict:
    """``_common`` without the seed: base models and their evaluations take their seed from
    their partition (``seeds``), so adding a seed adds partitions and stales none."""
    return _without(_common(profile), "seed")


@section("corpus", "tokenizer (content fingerprint), seed and val_fraction: how every domain is tokenised and split.",
         ("domain_corpus", "finetune_corpus"))
def _corpus(profile: Profile, mixtures: MixturesConfig | None) -> dict:
    return {**_common(profile), "val_fraction": profile.val_fraction}


@section("proxy", "the proxy's model and training settings with the tokenizer and seed, or the fingerprint of "
                  "`proxy.checkpoint`.", ("proxy_model",))
def _proxy(profile: Profile, mixtures: MixturesConfig | None) -> dict:
    if profile.proxy.checkpoint:  # a user's model: its files are what matters, not our recipe
        return {**_common(profile), "proxy": {"checkpoint": profile.proxy.checkpoint,
                                              "checkpoint_fingerprint": checkpoint_fingerprint(profile)}}
    proxy = dataclasses.asdict(profile.proxy)
    proxy["model"], proxy["train"] = _model_fields(proxy["model"]), _result_fields(proxy["train"])
    return {**_common(profile), "proxy": proxy}


@section("embedding", "num_samples, sample_length and the forward pass's dtype with the tokenizer and seed (not "
                      "batch_size, which changes nothing computed).", ("domain_embeddings", "finetune_embeddings"))
def _embedding(profile: Profile, mixtures: MixturesConfig | None) -> dict:
    embedding = _without(dataclasses.asdict(profile.embedding), "batch_size")
    # float32 is what every CPU and MPS run computed before `dtype` existed (CUDA ran
    # under bfloat16 autocast; the shipped gpu profile's section changed with it anyway).
    return {**_common(profile), "embedding": _unless_default(embedding, "dtype", "float32")}


@section("mixing", "conf/mixtures.yaml: the mixtures, lambda and its ridge, temperatures, UniMax, presets and the "
                   "settings of other closed-form methods listed (UniMax's budget resolved when it defaults to the "
                   "base models' token budget). An online method's settings (aioli's interval, step size, probes, "
                   "held-out windows) travel in the weights table to its base models, whose data version covers "
                   "them: changing them retrains that mixture's models only.", ("mixture_weights",))
def _mixing(profile: Profile, mixtures: MixturesConfig | None) -> dict:
    mixtures = mixtures or load_mixtures()
    data = _without(dataclasses.asdict(mixtures), "finetune_mixtures")  # finetune_mixing's
    # Mixtures computed by methods that train proxies are not mixture_weights' to compute.
    data["mixtures"] = [m for m in data["mixtures"] if m not in computed_mixtures()]
    data["presets"] = {n: w for n, w in data["presets"].items() if n in pretraining_presets(mixtures)}
    data["chameleon"] = _unless_default(data["chameleon"], "ridge", "absolute")
    data["methods"] = {m: v for m, v in data["methods"].items() if m in mixtures.mixtures}
    if "unimax" in mixtures.mixtures and mixtures.unimax_budget_tokens is None:
        # UniMax's weights are a function of the training budget it defaults to.
        data["unimax_budget_tokens"] = profile.base_model.train.tokens
    return _unless_default(data, "methods", {})


@section("finetune_mixing", "conf/mixtures.yaml's `finetune_mixtures` and the parameters they use (lambda and its "
                            "ridge, T_ft; T_pt, the temperature, presets and other methods' settings only when "
                            "listed).", ("finetune_weights",))
def _finetune_mixing(profile: Profile, mixtures: MixturesConfig | None) -> dict:
    mixtures = mixtures or load_mixtures()
    names = mixtures.finetune_mixtures
    chameleon = _unless_default(_without(dataclasses.asdict(mixtures.chameleon), "t_pretrain"), "ridge", "absolute")
    if "chameleon_pretrain" in names:
        chameleon["t_pretrain"] = mixtures.chameleon.t_pretrain
    data = {"finetune_mixtures": names, "chameleon": chameleon,
            "presets": {n: mixtures.presets[n] for n in names if n in mixtures.presets}}
    if "temperature" in names:
        data["temperature"] = mixtures.temperature
    methods = {m: v for m, v in mixtures.methods.items() if m in names}
    return {**data, "methods": methods} if methods else data


@section("base_model", "the base models' architecture and training settings (token budget, batch, schedule) with "
                       "the tokenizer (each model's seed is its partition). The profile's list of mixtures to train "
                       "is not part of it: that only says what `make run` requests.",
         ("base_model",))
def _base_model(profile: Profile, mixtures: MixturesConfig | None) -> dict:
    return {**_per_seed(profile), "model": _model_fields(dataclasses.asdict(profile.base_model.model)),
            "train": _result_fields(dataclasses.asdict(profile.base_model.train))}


@section("evaluation", "tasks, shots, example limit and perplexity windows (not batch_size).",
         ("evaluation", "mixture_comparison", "finetune_evaluation", "finetune_comparison"))
def _evaluation(profile: Profile, mixtures: MixturesConfig | None) -> dict:
    return {**_per_seed(profile), "evaluation": _without(dataclasses.asdict(profile.evaluation), "batch_size")}


@section("finetune", "the profile's `finetune` section: which model each finetuned model starts from (a base_model "
                     "mixture, or the fingerprint of `finetune.checkpoint`), the training settings and the context "
                     "length, with the tokenizer.", ("finetuned_model",))
def _finetune(profile: Profile, mixtures: MixturesConfig | None) -> dict:
    # The start model's own version is part of each finetuned model's data version
    # (it differs per seed); here only which start, and the finetuning recipe.
    ft = profile.finetune
    start = ({"checkpoint": ft.checkpoint,
              "checkpoint_fingerprint": checkpoint_fingerprint(profile, ft.checkpoint, "finetune.checkpoint")}
             if ft.checkpoint else {"base": ft.base})
    return {**_per_seed(profile), **start, "context_length": profile.base_model.model.context_length,
            "train": _result_fields(dataclasses.asdict(ft.train))}


def _method_sections() -> dict[str, Section]:
    """The sections of the methods that train, as each declares them (module docstring)."""
    from chameleon_assets.core.methods import get, swarm_users, trained_methods

    out: dict[str, Section] = {}
    for name in trained_methods():
        method = get(name)
        if method.swarm is not None:
            def fitted(profile: Profile, mixtures: MixturesConfig | None, name=name) -> dict:  # noqa: ANN001
                return {**_common(profile), "method": name, "params": dataclasses.asdict(fit_params(profile, name))}

            out[name] = Section(name, f"the {name} fit's settings: `methods.{name}`, its runs and token budget "
                                f"resolved (default: all of `methods.{method.swarm}.runs`, the base models' budget).",
                                tuple(f"{m}_weights" for m in (name, *method.also_serves)), fitted)
            continue

        def params(profile: Profile, name: str = name) -> dict:
            data = dataclasses.asdict(method_params(profile, name))
            if "model" in data and "train" in data:  # the method's own small models
                data["model"], data["train"] = _model_fields(data["model"]), _result_fields(data["train"])
            return data

        if method.fit_fields:
            def run(profile: Profile, mixtures: MixturesConfig | None, params=params, method=method) -> dict:  # noqa: ANN001
                return {**_common(profile), "params": _without(params(profile), *method.fit_fields)}

            def fit(profile: Profile, mixtures: MixturesConfig | None, params=params, method=method) -> dict:  # noqa: ANN001
                data = params(profile)
                fitted = {k: data[k] for k in method.fit_fields}
                # A method may hash what its fit settings mean rather than how they are written.
                hashed = getattr(method, "fit_section", None)
                return {"params": hashed(fitted) if hashed else fitted}

            # The methods that fit this swarm check its runs against it; the mixtures they also
            # serve train reduced swarms of the same small models.
            users = swarm_users(name)
            served = [x for m in users[1:] for x in get(m).also_serves]
            out[f"{name}_run"] = Section(f"{name}_run", f"what one {name} swarm run reads: `methods.{name}` without "
                                         f"the fit's settings, with the tokenizer and seed.",
                                         (f"{name}_run", *(f"{m}_weights" for m in users),
                                          *(f"{x}_{a}" for x in served for a in ("run", "weights"))), run)
            out[name] = Section(name, f"the {name} fit's settings: `methods.{name}`: "
                                f"{', '.join(method.fit_fields)}.", (f"{name}_weights",), fit)
            continue

        def content(profile: Profile, mixtures: MixturesConfig | None, params=params, name=name,  # noqa: ANN001
                    method=method) -> dict:
            recipe = ({"model": _model_fields(dataclasses.asdict(profile.proxy.model)),
                       "train": _result_fields(dataclasses.asdict(profile.proxy.train))}
                      if method.proxy_recipe else {})
            return {**_common(profile), **recipe, "method": name, "params": params(profile)}

        with_recipe = " with the proxy's model and training recipe (it trains proxies of that size and budget)," \
            if method.proxy_recipe else ""
        out[name] = Section(name, f"the profile's `methods.{name}`{with_recipe} tokenizer and seed.",
                            (f"{name}_weights",), content)
    return out


def config_sections() -> dict[str, Section]:
    """Every configuration section: the fixed ones, then those of the methods that train."""
    return {**_FIXED, **_method_sections()}


CONFIG_SECTIONS = tuple(config_sections())


def config_section(name: str, profile: Profile, mixtures: MixturesConfig | None = None) -> dict:
    """The normalised configuration of section ``name`` (a KeyError naming the known ones)."""
    sections = config_sections()
    if name not in sections:
        raise KeyError(f"unknown configuration section {name!r}; known: {', '.join(sections)}")
    return sections[name].content(profile, mixtures)


def section_version(name: str, profile: Profile, mixtures: MixturesConfig | None = None) -> str:
    """The data version of a configuration section: sha256 of its canonical JSON (24 hex digits)."""
    data = config_section(name, profile, mixtures)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


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
