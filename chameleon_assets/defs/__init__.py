"""Dagster wrappers: read config, call ``chameleon_assets.core``, write, describe."""
