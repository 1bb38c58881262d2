"""MkDocs hooks (``hooks:`` in docs/mkdocs.yml): the generated parts of the pages.

A page asks for generated content with a marker, on its own line or inside a sentence::

    <!-- gen: config-profile -->
    <!-- gen: study-summary csv=cpu_study_comparison.csv -->

``on_page_markdown`` replaces each marker with ``GENERATORS[name](**arguments)``; an
unknown name, a bad argument or a missing results file fails the build. ``on_files`` adds
what the site shows from outside ``pages/``: the plots in ``bench/results/`` (under
``results/``) and the Kubernetes guide kept beside its instance file in ``conf/k8s/``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import shlex
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

DOCS = Path(__file__).resolve().parent
if str(DOCS) not in sys.path:
    sys.path.insert(0, str(DOCS))

from docgen import REPO, graph, reference, results, text  # noqa: E402 - needs the path above

# `mkdocs serve` runs this file again on every rebuild; the generators it imports are
# reloaded with it, so an edit to them shows without a restart.
for _module in (text, reference, graph, results):
    importlib.reload(_module)

MARKER = re.compile(r"<!--\s*gen:\s*([a-z0-9-]+)(.*?)-->")


def _constant(module: str, name: str) -> str:
    """A constant of the package, for a sentence (``module``: dotted, under chameleon_assets)."""
    value = getattr(importlib.import_module(f"chameleon_assets.{module}"), name)
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _docstring(object: str = "", file: str = "", paragraphs: str = ":", oneline: str = "") -> str:  # noqa: A002
    """The docstring of ``chameleon_assets.<object>`` (``module`` or ``module:Class.function``),
    or of the script ``file`` (a path in the repository); read from the source, never
    imported (``core.train`` would import torch). ``paragraphs``: a slice of its paragraphs
    (``1:-1`` drops the first and the last). Indented formula blocks stay code blocks,
    unless ``oneline`` joins it all into one line (for a table cell or a sentence)."""
    module_name, _, attribute = object.partition(":")
    path = REPO / file if file else Path(importlib.util.find_spec(f"chameleon_assets.{module_name}").origin)
    node: ast.AST = ast.parse(path.read_text(encoding="utf-8"))
    for part in filter(None, attribute.split(".")):
        node = next(n for n in node.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part)
    start, _, stop = paragraphs.partition(":")
    chosen = (ast.get_docstring(node) or "").split("\n\n")[int(start) if start else None:int(stop) if stop else None]
    return " ".join(" ".join(chosen).split()) if oneline else _lists_apart("\n\n".join(chosen))


def _lists_apart(doc: str) -> str:
    """A blank line before a docstring's bullet list, which Markdown needs to see a list."""
    lines = doc.split("\n")
    out = []
    for i, line in enumerate(lines):
        bullet = re.match(r"[-*] ", line)
        if bullet and i and lines[i - 1].strip() and not re.match(r"\s*[-*] |\s{2,}\S", lines[i - 1]):
            out.append("")
        out.append(line)
    return "\n".join(out)


def _eval_tasks() -> str:
    """The local lm-eval tasks shipped in the package (one YAML each)."""
    folder = REPO / "chameleon_assets" / "eval_tasks"
    return ", ".join(f"`{p.stem}`" for p in sorted(folder.glob("*.yaml")) if not p.stem.startswith("_"))


def _tests() -> str:
    """Every test module: what its docstring says it pins down, and whether it has tests
    marked ``slow`` (left out by ``make test-fast``)."""
    rows = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(source)) or ""
        rows.append((f"`{path.name}`", " ".join(doc.split("\n\n")[0].split()),
                     "yes" if "mark.slow" in source else ""))
    return text.table(["module", "what it pins down", "slow tests"], rows)


GENERATORS = {
    # The configuration reference and the code location (docgen.reference, docgen.graph).
    "config-profile": reference.profile_reference,
    "config-mixtures": reference.mixtures_reference,
    "config-methods": reference.methods_reference,
    "config-registry": reference.registry_reference,
    "config-sections": reference.sections_reference,
    "profiles": reference.profiles_overview,
    "assets": graph.asset_catalogue,
    "asset-checks": graph.asset_checks,
    "asset-groups": graph.group_names,
    "constant": _constant,
    "docstring": _docstring,
    "default-corpus": reference.default_corpus,
    "methods-summary": reference.methods_summary,
    "eval-tasks": _eval_tasks,
    "tests": _tests,
    # Measured numbers (docgen.results), read from bench/results/.
    "study-summary": results.study_summary,
    "study-domains": results.study_domains,
    "study-weights": results.study_weights,
    "study-verdicts": results.study_verdicts,
    "study-timing": results.study_timing,
    "make-run-latest": results.make_run_latest,
    "make-run-steps": results.make_run_steps,
    "make-run-history": results.make_run_history,
    "train-step": results.train_step,
    "train-step-pairs": results.train_step_pairs,
    "add-domain": results.add_domain,
    "corpus-read": results.corpus_read,
    "provenance": results.provenance,
    "methods-cost": results.methods_cost,
    "methods-add-domain": results.methods_add_domain,
    "gpu": results.gpu,
    "gpu-smoke": results.gpu_smoke,
    "results-index": results.results_index,
    "value": results.value,
}


def render(markdown: str, where: str = "") -> str:
    """``markdown`` with every marker replaced by what it generates."""
    reference.reset()  # each page writes each settings class once, where it first meets it

    def replace(match: re.Match) -> str:
        name, raw = match.group(1), match.group(2)
        if name not in GENERATORS:
            raise PluginError(f"{where}: unknown generator '{name}'; known: {', '.join(sorted(GENERATORS))}")
        try:
            arguments = dict(part.split("=", 1) for part in shlex.split(raw))
            return GENERATORS[name](**arguments)
        except (ValueError, TypeError, KeyError, FileNotFoundError, StopIteration, AttributeError) as exc:
            raise PluginError(f"{where}: <!-- gen: {name}{raw}-->: {type(exc).__name__}: {exc}") from exc

    return MARKER.sub(replace, markdown)


def on_files(files, config):  # noqa: ANN001, ANN201 - MkDocs' hook signature
    for plot in sorted(results.results_dir().glob("*.png")):
        files.append(File.generated(config, f"results/{plot.name}", abs_src_path=str(plot)))
    files.append(File.generated(config, "kubernetes.md", abs_src_path=str(REPO / "conf" / "k8s" / "README.md")))
    return files


def on_page_markdown(markdown, page, config, files):  # noqa: ANN001, ANN201
    return render(markdown, page.file.src_uri)
