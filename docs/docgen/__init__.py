"""Generated parts of the documentation: the configuration reference (read from the
schema in ``chameleon_assets``), the asset catalogue (read from the Dagster definitions)
and the tables of measured numbers (read from ``bench/results/``).

``docs/hooks.py`` replaces each marker ``<!-- gen: NAME key=value ... -->`` in a page with
``GENERATORS[NAME](**keys)``; ``docs/render_readme.py`` writes the README's one table.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
