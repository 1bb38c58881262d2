"""One interface for mixing methods: domains in, weights and how they were obtained out.

A method is an object with a ``name``, the inputs it ``needs``, a ``Params`` dataclass
(its settings, validated from YAML by ``settings``) and

    compute(domains: DomainSet, params: Params, proxy: ProxyRecipe | None) -> MethodResult

``DomainSet`` carries what a method may read about the k domains (names, token counts,
the CHAMELEON kernel of their mean embeddings, their train and validation tokens);
``ProxyRecipe`` is the hook that builds and trains proxy models of the profile's size;
``MethodResult`` holds the weights (a distribution over the k domains), the trajectory
of weights over training steps when the method has one, and the ``Cost`` it spent.

Each method lives in its own module of this package and registers itself with
``@register``; ``registered()`` imports every module here, so adding a method is adding
a module (and its settings to the YAML). A method also says where its settings live and
what they are part of, so that the application needs no list of methods:

* **closed-form** methods (``needs`` without ``"proxy"``) are computed together in
  ``mixture_weights``/``finetune_weights``, for the ``stages`` they serve. Their settings
  are in conf/mixtures.yaml: ``mixture_settings(mixtures, budget_tokens)`` picks the
  method's ``Params`` fields out of that file (by default its entry under ``methods:``;
  the built-in ones read their historical keys, such as ``temperature:``). They are
  part of the ``mixing`` (and ``finetune_mixing``) configuration section.
* methods that **train** (``"proxy"`` in ``needs``) get their own assets and their own
  configuration section, from the profile's ``methods.<name>``. ``proxy_recipe``: they
  train models of the profile's proxy recipe, which is then part of their section (or,
  false, their ``Params`` carry the models they train). ``fit_fields``: for a swarm of
  small runs and a fit over them (RegMix), the settings only the fit reads; they form a
  section of their own, so changing them retrains no run.
  ``swarm``: a method that trains no swarm of its own but fits another's (Olmix on
  RegMix's runs) names it; its whole section is its fit's. ``also_serves``: further
  mixtures its assets compute (Olmix's ``olmix_reuse``), valid in conf/mixtures.yaml too.

* **online** methods (``online``) are closed-form as far as the weights table goes: their
  row is the mixture the base model starts from. Their ``Params`` also drive the base
  model's sampler while it trains: ``mixing(params, weights, train, seq_len)`` returns the
  ``core.online.OnlineMixing`` that ``core.train`` follows, and the settings are part of
  those base models' data version alone.

No Dagster here: callable from a notebook.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Protocol

import numpy as np

from chameleon_assets.core.cost import Cost, forward_flops_per_token, train_flops_per_token

# What a method may ask for. "tokens": train token counts; "kernel": K = E E^T of the
# domain mean embeddings; "corpora": train and validation token ids; "proxy": the hook
# that trains proxy models (a method that needs it costs training compute).
NEEDS = frozenset({"tokens", "kernel", "corpora", "proxy"})


@dataclass
class DomainSet:
    """The k domains a method weighs, in a fixed order (``names``)."""

    names: list[str]
    train_tokens: np.ndarray  # (k,) train tokens per domain
    kernel: np.ndarray | None = None  # (k, k) K = E E^T of the domain mean embeddings
    train: Mapping[str, np.ndarray] | None = None  # domain -> train token ids (memory-mapped)
    val: Mapping[str, np.ndarray] | None = None  # domain -> held-out token ids

    def __post_init__(self) -> None:
        self.train_tokens = np.asarray(self.train_tokens, dtype=np.float64)
        if len(self.names) != len(self.train_tokens):
            raise ValueError(f"{len(self.names)} domain names but {len(self.train_tokens)} token counts")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"domain names repeat: {self.names}")

    @property
    def k(self) -> int:
        return len(self.names)

    def require(self, method: str, needs: frozenset[str]) -> None:
        """Raise naming the method and the input it lacks."""
        if "kernel" in needs and self.kernel is None:
            raise ValueError(f"method '{method}' needs the domain kernel (embeddings) and none was given")
        if "corpora" in needs:
            for what, data in (("train", self.train), ("validation", self.val)):
                missing = [d for d in self.names if data is None or d not in data]
                if missing:
                    raise ValueError(f"method '{method}' needs the {what} tokens of {', '.join(missing)}")


@dataclass
class ProxyRecipe:
    """The hook through which a method builds and trains proxy models: the profile's
    model config and training recipe, the tokenizer's vocabulary, a seed and a device."""

    model: Any  # settings.ModelConfig
    train: Any  # settings.TrainConfig
    vocab_size: int
    eos_id: int
    seed: int
    device: str = "cpu"
    progress: bool = False

    def build(self, seed: int | None = None):  # noqa: ANN201 - a transformers PreTrainedModel
        """A freshly initialised proxy (seeded by ``seed``, default the recipe's)."""
        from chameleon_assets.core.model import build_model

        return build_model(self.model, self.vocab_size, self.eos_id, self.seed if seed is None else seed)

    def torch_device(self):  # noqa: ANN201
        from chameleon_assets.core.model import resolve_device

        return resolve_device(self.device)

    def flops_per_token(self, model) -> tuple[float, float]:  # noqa: ANN001
        """(training, forward) FLOPs per token of ``model`` at this recipe's context length."""
        from chameleon_assets.core.model import count_parameters

        n = count_parameters(model)
        shape = (n, self.model.num_layers, self.model.context_length, self.model.hidden_size)
        return train_flops_per_token(*shape), forward_flops_per_token(*shape)

    def train_on(self, train: Mapping[str, np.ndarray], weights: Mapping[str, float], part: str,
                 seed: int | None = None, train_cfg: Any = None, model_cfg: Any = None):  # noqa: ANN201
        """Train a fresh model on the ``weights`` mixture of ``train`` (the plain training
        loop of ``core.train``); returns ``(model, TrainResult, Cost)`` with the cost named ``part``.

        ``train_cfg`` / ``model_cfg`` override the recipe's (RegMix's small swarm models).
        """
        import time

        from chameleon_assets.core.model import build_model, count_parameters
        from chameleon_assets.core.train import WeightedDomainSampler, train_causal_lm

        cfg_m, cfg_t = model_cfg or self.model, train_cfg or self.train
        seed = self.seed if seed is None else seed
        model = build_model(cfg_m, self.vocab_size, self.eos_id, seed)
        sampler = WeightedDomainSampler(dict(train), dict(weights), cfg_m.context_length, seed)
        t0 = time.perf_counter()
        result = train_causal_lm(model, sampler, cfg_t, self.torch_device(), progress=self.progress, desc=part)
        wall = time.perf_counter() - t0
        flops = train_flops_per_token(count_parameters(model), cfg_m.num_layers, cfg_m.context_length,
                                      cfg_m.hidden_size) * result.tokens
        return model, result, Cost.of(part, flops, wall, result.tokens)


@dataclass
class MethodResult:
    """A method's weights (``weights[i]`` for ``DomainSet.names[i]``) and how it got them."""

    weights: np.ndarray
    cost: Cost = field(default_factory=Cost)
    trajectory: np.ndarray | None = None  # (steps, k): the weights after each update, when the method has steps
    details: dict = field(default_factory=dict)  # JSON-friendly extras (e.g. RegMix's rank correlation)
    notes: list[str] = field(default_factory=list)


class MixingMethod(Protocol):
    """What every method provides (see the module docstring); ``register`` fills in the
    defaults of the optional attributes."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]]
    Params: ClassVar[type]
    stages: ClassVar[frozenset[str]]  # closed-form: the weights it serves (default both)
    proxy_recipe: ClassVar[bool]  # trained: its section holds the profile's proxy recipe (default true)
    fit_fields: ClassVar[tuple[str, ...]]  # trained swarm: the Params fields only its fit reads (default none)
    swarm: ClassVar[str | None]  # trained: the swarm method whose runs its fit reads (default none)
    also_serves: ClassVar[tuple[str, ...]]  # trained: further mixtures its assets compute (default none)
    online: ClassVar[bool]  # closed-form start of a mixture that moves during base training (default false)

    def compute(self, domains: DomainSet, params: Any, proxy: ProxyRecipe | None = None) -> MethodResult: ...

    def mixture_settings(self, mixtures: Mapping[str, Any], budget_tokens: int) -> dict[str, Any]: ...


STAGES = frozenset({"pretrain", "finetune"})
_METHODS: dict[str, MixingMethod] = {}


def _settings_under_methods(self: Any, mixtures: Mapping[str, Any], budget_tokens: int) -> dict[str, Any]:
    """A closed-form method's ``Params`` fields: its entry under ``methods:`` in conf/mixtures.yaml."""
    return dict((mixtures.get("methods") or {}).get(self.name) or {})


def register(cls: type) -> type:
    """Class decorator: register one instance of a method under its ``name``."""
    defaults = {"stages": STAGES, "proxy_recipe": True, "fit_fields": (), "swarm": None, "also_serves": (),
                "online": False,
                "mixture_settings": _settings_under_methods}
    for attribute, value in defaults.items():
        if not hasattr(cls, attribute):
            setattr(cls, attribute, value)
    method = cls()
    if not method.needs <= NEEDS:
        raise ValueError(f"method '{method.name}' needs unknown inputs {sorted(method.needs - NEEDS)}")
    if not method.stages <= STAGES:
        raise ValueError(f"method '{method.name}' serves unknown stages {sorted(method.stages - STAGES)}")
    unknown = set(method.fit_fields) - {f.name for f in dataclasses.fields(method.Params)}
    if unknown:
        raise ValueError(f"method '{method.name}': fit_fields {sorted(unknown)} are not fields of its Params")
    if method.name in _METHODS and type(_METHODS[method.name]) is not cls:
        raise ValueError(f"two methods are named '{method.name}'")
    _METHODS[method.name] = method
    return cls


def registered() -> dict[str, MixingMethod]:
    """Every method of this package, by name (importing each module registers it)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return dict(_METHODS)


def get(name: str) -> MixingMethod:
    """The method called ``name``, or a ValueError listing the known ones."""
    methods = registered()
    if name not in methods:
        raise ValueError(f"unknown mixing method '{name}'; known: {', '.join(sorted(methods))}")
    return methods[name]


def online_methods() -> list[str]:
    """Names of the methods whose mixture changes during base training (``online``): their
    weights are where the base model starts, their ``Params`` drive it while it trains."""
    return sorted(n for n, m in registered().items() if m.online)


def online_mixing(name: str, params: Mapping[str, Any], weights: Mapping[str, float],
                  train: Mapping[str, np.ndarray], seq_len: int):  # noqa: ANN201 - a core.online.OnlineMixing
    """The ``OnlineMixing`` that online method ``name`` drives a base model's sampler with:
    ``params`` its settings as plain data (validated by its ``Params``), ``weights`` its row
    of the weights table (the start), ``train`` each domain's training tokens (the mixture
    may reserve some for its measurements: train the sampler on ``core.online.trainable``)."""
    method = get(name)
    if not method.online:
        raise ValueError(f"method '{name}' does not change its mixture during training")
    return method.mixing(method.Params(**params), dict(weights), dict(train), seq_len)


def trained_methods() -> list[str]:
    """Names of the methods that train proxy models (each gets its own assets)."""
    return sorted(n for n, m in registered().items() if "proxy" in m.needs)


def computed_mixtures() -> list[str]:
    """Every mixture the trained methods compute: each method's own, then those it ``also_serves``."""
    return [*trained_methods(), *(x for m in trained_methods() for x in get(m).also_serves)]


def swarm_users(swarm: str) -> list[str]:
    """The trained methods whose fit reads method ``swarm``'s runs (``swarm`` itself first)."""
    return [swarm, *(n for n in trained_methods() if get(n).swarm == swarm)]


def closed_form_methods(stage: str) -> list[str]:
    """Names of the closed-form methods that can be listed as mixtures of ``stage``
    (``pretrain`` or ``finetune``), in the order they registered."""
    return [n for n, m in registered().items() if "proxy" not in m.needs and stage in m.stages]


def check_weights(weights: np.ndarray, k: int, method: str) -> np.ndarray:
    """``weights`` as a float64 distribution over k domains, or a ValueError naming the method."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (k,):
        raise ValueError(f"method '{method}' returned {w.shape} weights for {k} domains")
    if not np.isfinite(w).all() or (w < 0).any() or abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(f"method '{method}' returned weights that are not a distribution: {w.tolist()}")
    return w / w.sum()


def out_of_fold_predictions(X: np.ndarray, Y: np.ndarray, folds: int, fit: Callable[[np.ndarray, np.ndarray], Any],
                            ) -> np.ndarray:
    """k-fold held-out predictions of a swarm regression: run r (fold = r mod ``folds``)
    is predicted by ``fit(X[~out], Y[~out]).predict(X[out])``, the law fitted to the runs
    outside its fold, so Y_hat[r] = L^(-fold(r))(X[r]). ``Y`` may be (n,) or (n, m); the
    caller checks 2 <= folds <= n."""
    fold = np.arange(len(X)) % folds
    predicted = np.empty(np.shape(Y), dtype=np.float64)
    for f in range(folds):
        out = fold == f
        predicted[out] = fit(X[~out], Y[~out]).predict(X[out])
    return predicted


def run(name: str, domains: DomainSet, params: Any = None, proxy: ProxyRecipe | None = None) -> MethodResult:
    """Compute method ``name`` on ``domains``: checks its inputs, and its output is a distribution.

    ``params`` defaults to the method's ``Params()``.
    """
    method = get(name)
    domains.require(name, method.needs)
    if "proxy" in method.needs and proxy is None:
        raise ValueError(f"method '{name}' trains proxy models: give it a ProxyRecipe")
    result = method.compute(domains, params if params is not None else method.Params(), proxy)
    result.weights = check_weights(result.weights, domains.k, name)
    return result

