"""The code location: every asset, check, sensor and resource, assembled."""

import dagster as dg

from chameleon_assets.defs.checks import CHECKS
from chameleon_assets.defs.corpus import domain_corpus, domain_source
from chameleon_assets.defs.models import base_model, evaluation, mixture_comparison
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sensors import domain_registry_sensor
from chameleon_assets.defs.tracking import MLflowTracking
from chameleon_assets.defs.weights import affinity_matrix, domain_embeddings, mixture_weights, proxy_model

ASSETS = [
    domain_source,
    domain_corpus,
    proxy_model,
    domain_embeddings,
    affinity_matrix,
    mixture_weights,
    base_model,
    evaluation,
    mixture_comparison,
]

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    sensors=[domain_registry_sensor],
    resources={"chameleon": ChameleonConfig(), "mlflow_tracking": MLflowTracking()},
)
