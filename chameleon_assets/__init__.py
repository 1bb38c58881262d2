"""CHAMELEON data mixing as Dagster software-defined assets.

`chameleon_assets.core` holds the science (framework-free); the modules under
`chameleon_assets.defs` wrap it as Dagster assets.
"""

__version__ = "0.1.0"
