"""Partitions, defined once: one per registered domain, one per mixture."""

from __future__ import annotations

import dagster as dg

from chameleon_assets.settings import ConfigError, load_mixtures

domain_partitions = dg.DynamicPartitionsDefinition(name="domain")


def _mixture_names() -> list[str]:
    try:
        return load_mixtures().mixtures
    except ConfigError:
        # A broken mixtures.yaml must not stop the code location from loading; the
        # mixture_weights asset reports the error when it runs.
        return ["uniform"]


mixture_partitions = dg.StaticPartitionsDefinition(_mixture_names())
