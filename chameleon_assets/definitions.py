"""The code location: every asset, check, sensor and resource, assembled."""

import dagster as dg

from chameleon_assets.defs.corpus import domain_corpus
from chameleon_assets.defs.resources import ChameleonConfig

ASSETS = [domain_corpus]

defs = dg.Definitions(
    assets=ASSETS,
    resources={"chameleon": ChameleonConfig()},
)
