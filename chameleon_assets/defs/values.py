"""What each asset hands downstream: small descriptors of artefacts on disk.

Each carries the ``data_version`` it was materialised as; the IO manager stores it
under that version and the artefact files it names live in a folder of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProxyModel:
    data_version: str
    path: str
    num_layers: int
    hidden_size: int
    middle_layer: int
    parameters: int
    trained_here: bool
    tokenizer: str
    tokenizer_fingerprint: str
    train_domains: dict = field(default_factory=dict)  # domain -> domain_corpus data version it trained on


@dataclass(frozen=True)
class DomainEmbedding:
    data_version: str
    domain: str
    path: str
    num_samples: int
    dim: int
    mean: tuple
    proxy_version: str
    corpus_version: str = ""
    train_tokens: int = 0  # of that corpus version (what the natural/UniMax baselines weigh)
    wall_s: float = 0.0  # seconds the proxy's forward passes took (0: not recorded)
    tokens: int = 0  # tokens run through the proxy (windows x length; 0: not recorded)


@dataclass(frozen=True)
class AffinityMatrix:
    data_version: str
    path: str
    domains: list
    kernel: list
    kernel_centered: list
    proxy_versions: list
    heatmap_path: str
    corpus_versions: dict = field(default_factory=dict)  # domain -> corpus version its embedding read
    train_tokens: dict = field(default_factory=dict)  # domain -> train tokens of that version
    embedding_versions: dict = field(default_factory=dict)  # domain -> domain_embeddings version it used
    embeddings_asset: str = "domain_embeddings"  # or finetune_embeddings: where those versions are stored


@dataclass
class MixtureTable:
    """Every mixture's weights over ``domains`` (each list sums to 1), plus KRLS details."""

    data_version: str
    path: str
    domains: list
    weights: dict
    krls: list
    krls_raw: list
    params: dict
    skipped: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    train_tokens: dict = field(default_factory=dict)
    corpus_versions: dict = field(default_factory=dict)
    proxy_versions: list = field(default_factory=list)
    heatmap_path: str = ""
    mlflow_run_id: str = ""
    affinity_version: str = ""  # the affinity_matrix data version computed from ("" before it was recorded)
    costs: dict = field(default_factory=dict)  # mixture -> core.cost.Cost.as_dict(): what its weights cost
    sources: dict = field(default_factory=dict)  # mixture -> "<asset> <data version>" it was computed by
    # mixture -> the settings of its online method (core.methods.online_methods): the row is
    # where its base models start, these drive their sampler while they train. Read with
    # getattr(table, "online", {}): tables stored before the field existed lack it.
    online: dict = field(default_factory=dict)

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.weights, index=self.domains).T


@dataclass(frozen=True)
class WeightDiagnostics:
    """How sensitive one set of CHAMELEON weights is; the grids and tables are in ``path``/diagnostics.json."""

    data_version: str
    path: str
    domains: list
    weights_version: str  # the mixture_weights data version diagnosed
    affinity_version: str
    ridge: str
    lam: float
    lam_effective: float  # the lambda in K_c + lambda k I
    lam_relative: float | None  # the same ridge as a relative lam (lambda k / trace(K_c)); None if trace is 0
    trace: float
    eigenvalues: list
    d_eff: float
    rank_correlation: float | None  # of the leverage scores over window subsets; None if not computable
    near_duplicates: list  # [{"a", "b", "distance_ratio", "noise_ratio", "shares"}]
    warnings: list


@dataclass
class MethodWeights:
    """The weights one computed method (DoReMi, DoGE, RegMix) found over ``domains``, and how."""

    data_version: str
    method: str
    path: str
    domains: list
    weights: list
    cost: dict  # core.cost.Cost.as_dict()
    corpus_versions: dict  # domain -> domain_corpus version it read
    train_tokens: dict
    details: dict = field(default_factory=dict)
    trajectory_steps: int = 0
    mlflow_run_id: str = ""


@dataclass(frozen=True)
class SwarmRun:
    """One RegMix swarm run: a small model trained on ``mixture``, scored per domain."""

    data_version: str
    run: int
    path: str
    domains: list
    mixture: list
    val_nll: dict  # domain -> held-out per-token NLL
    cost: dict
    corpus_versions: dict


@dataclass(frozen=True)
class BaseModel:
    data_version: str
    mixture: str
    path: str
    weights: dict
    corpus_versions: dict
    tokens: int
    steps: int
    final_loss: float
    tokens_per_s: float
    epochs: dict
    mlflow_run_id: str
    resumed_from_step: int = 0
    seed: int = 0
    mlflow_parent_run_id: str = ""  # the mixture's parent run (aggregates over seeds)
    config_version: str = ""  # the `config_base_model` data version it was trained with
    # Its online method's settings when its mixture changed during training (MixtureTable.online);
    # read with getattr(model, "online", {}): models stored before the field existed lack it.
    online: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    data_version: str
    mixture: str
    path: str
    base_model_version: str
    perplexity: dict
    bits_per_byte: dict
    perplexity_avg: float
    bits_per_byte_avg: float
    tasks: dict
    num_fewshot: int
    limit: int | None
    config_version: str = ""  # the `config_evaluation` data version it was computed with
    val_versions: dict = field(default_factory=dict)  # domain -> domain_corpus data version scored
    seed: int = 0
    nll: dict = field(default_factory=dict)  # domain -> mean NLL per token (nats)

    @property
    def model_data_version(self) -> str:
        """The data version of the model scored."""
        return self.base_model_version


@dataclass(frozen=True)
class ComparisonTable:
    data_version: str
    path: str  # folder holding mixture_comparison.csv and the plot
    rows: dict  # mixture -> {column: value} (columns: core.compare)
    included: dict  # "<mixture>|<seed>" -> {"base_model": version, "evaluation": version}
    excluded: dict  # "<mixture>|<seed>" -> why its evaluation is not in the table
    domains: list = field(default_factory=list)
    tasks: list = field(default_factory=list)
    baseline: str | None = None  # the mixture the paired differences are against
    notes: list = field(default_factory=list)


@dataclass(frozen=True)
class FinetunedModel:
    """A model finetuned on the finetuning domains, and the model it started from."""

    data_version: str
    mixture: str  # a finetune mixture (finetune_weights)
    seed: int
    path: str
    weights: dict  # finetuning domain -> weight
    corpus_versions: dict  # finetuning domain -> finetune_corpus data version trained on
    start: str  # "base_model[<mixture>|<seed>]" or the checkpoint folder
    start_version: str  # the base model's data version, or the checkpoint's fingerprint
    start_path: str
    start_mlflow_run_id: str  # the base model's MLflow run ("" for a checkpoint)
    start_corpus_versions: dict  # pretraining domain -> version the start model trained on ({} for a checkpoint)
    tokens: int
    steps: int
    final_loss: float
    tokens_per_s: float
    epochs: dict
    mlflow_run_id: str
    mlflow_parent_run_id: str
    config_version: str  # the `config_finetune` data version it was trained with
    resumed_from_step: int = 0


@dataclass(frozen=True)
class FinetuneEvaluation:
    """Held-out scores of one finetuned model and of the model it started from, on the
    same windows: the finetuning domains (what finetuning should improve) and the
    pretraining domains (what it may forget)."""

    data_version: str
    mixture: str
    seed: int
    path: str
    model_version: str
    start: str
    bits_per_byte: dict  # finetuning domain -> bits per byte of the finetuned model
    nll: dict
    perplexity: dict
    pretrain_bits_per_byte: dict  # pretraining domain -> bits per byte of the finetuned model
    pretrain_nll: dict
    start_bits_per_byte: dict  # the start model, finetuning domains
    start_pretrain_bits_per_byte: dict  # the start model, pretraining domains
    config_version: str
    val_versions: dict  # domain (both groups) -> corpus data version whose validation split was scored
    tasks: dict = field(default_factory=dict)  # none: the stage is scored by perplexity

    @property
    def model_data_version(self) -> str:
        """The data version of the model scored."""
        return self.model_version

    @property
    def bits_per_byte_avg(self) -> float:
        return sum(self.bits_per_byte.values()) / max(len(self.bits_per_byte), 1)

    @property
    def forgetting(self) -> float:
        """Mean pretraining-domain bits per byte, finetuned minus start (positive: forgotten)."""
        n = max(len(self.pretrain_bits_per_byte), 1)
        return (sum(self.pretrain_bits_per_byte.values()) - sum(self.start_pretrain_bits_per_byte.values())) / n
