"""The code location: every asset, check, sensor and resource, assembled.

Loading it reads no configuration file and imports no torch, transformers, lm-eval or
MLflow: those are imported by the steps that need them.
"""

import dagster as dg

from chameleon_assets.defs.checks import CHECKS
from chameleon_assets.defs.corpus.assets import domain_corpus, finetune_corpus
from chameleon_assets.defs.finetune.assets import finetune_comparison, finetune_evaluation, finetuned_model
from chameleon_assets.defs.io import VersionedValueIOManager
from chameleon_assets.defs.methods.assets import METHOD_ASSETS, mixture_table
from chameleon_assets.defs.mixing.affinity import affinity_matrix, finetune_affinity
from chameleon_assets.defs.mixing.diagnostics import finetune_diagnostics, weight_diagnostics
from chameleon_assets.defs.mixing.embeddings import domain_embeddings, finetune_embeddings
from chameleon_assets.defs.mixing.proxy import proxy_model
from chameleon_assets.defs.mixing.weights import finetune_weights, mixture_weights
from chameleon_assets.defs.models.assets import base_model, evaluation, mixture_comparison
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sensors import chameleon_automation, domain_registry_sensor, lost_run_worker_sensor
from chameleon_assets.defs.sources import (
    CONFIG_SOURCES,
    domain_registry,
    domain_source,
    finetune_model_registry,
    finetune_registry,
    finetune_source,
    finetune_start,
    model_registry,
)
from chameleon_assets.defs.tracking import MLflowTracking

ASSETS = [
    *CONFIG_SOURCES.values(),
    domain_registry,
    model_registry,
    domain_source,
    domain_corpus,
    proxy_model,
    domain_embeddings,
    affinity_matrix,
    mixture_weights,
    weight_diagnostics,
    *METHOD_ASSETS,
    mixture_table,
    base_model,
    evaluation,
    mixture_comparison,
    finetune_registry,
    finetune_model_registry,
    finetune_source,
    finetune_start,
    finetune_corpus,
    finetune_embeddings,
    finetune_affinity,
    finetune_weights,
    finetune_diagnostics,
    finetuned_model,
    finetune_evaluation,
    finetune_comparison,
]

RESOURCES = {
    "chameleon": ChameleonConfig(),
    "mlflow_tracking": MLflowTracking(),
    "io_manager": VersionedValueIOManager(),
}

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    sensors=[domain_registry_sensor, chameleon_automation, lost_run_worker_sensor],
    resources=RESOURCES,
)
