"""The package uses Dagster's public API only: no module under ``dagster._`` is imported,
neither by an import statement nor by name through ``importlib`` / ``__import__``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "chameleon_assets"


def private_imports(source: str) -> list[str]:
    """The ``dagster._...`` modules that ``source`` imports, statically or by string."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("dagster._")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("dagster._") or (
                    node.module == "dagster" and any(a.name.startswith("_") for a in node.names)):
                found.append(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            arg = node.args[0].value
            if name in {"import_module", "__import__"} and isinstance(arg, str) and arg.startswith("dagster._"):
                found.append(arg)
    return found


def offenders() -> dict[str, list[str]]:
    """``{file relative to the repository: private dagster modules it imports}``."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        hits = private_imports(path.read_text())
        if hits:
            out[path.relative_to(PACKAGE.parent).as_posix()] = hits
    return out


def test_the_scan_sees_every_form_of_private_import():
    src = ("import dagster._core.events\nfrom dagster._core.loader import X\nfrom dagster import _check\n"
           "import importlib\nimportlib.import_module('dagster._core.x')\n__import__('dagster._utils')\n"
           "import dagster as dg\nfrom dagster import AssetKey\nimportlib.import_module('dagster')\n")
    assert private_imports(src) == ["dagster._core.events", "dagster._core.loader", "dagster",
                                    "dagster._core.x", "dagster._utils"]


def test_no_module_of_the_package_imports_dagster_internals():
    assert offenders() == {}
