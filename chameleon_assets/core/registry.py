"""The domain registry (``conf/domains.yaml``) and the one loader for domain documents.

A domain's source is one of:

* a folder of ``.txt`` files (one document per file, read in sorted order),
* a ``.jsonl``, ``.jsonl.gz`` or ``.jsonl.zst`` file with one JSON object per line,
* a ``.parquet`` file,
* a glob of such files (``/data/slimpajama/train/*.parquet``, ``**`` for sub-folders),
  read in sorted order as one source: how real corpora come, one sharded dataset,
* a Hugging Face dataset saved with ``save_to_disk`` (a folder with ``dataset_info.json``
  or, for a ``DatasetDict``, ``dataset_dict.json`` plus a ``split``).

A record source (jsonl, parquet, a glob of them) may carry a filter, ``where``: the
records whose (dotted) fields equal the given values, as in ``{meta.redpajama_set_name:
RedPajamaArXiv}``; a list of values matches any of them. This is how one dataset with a
source label per document becomes several domains. ``core.documents`` reads them.

Two groups share one entry format: ``domains:`` (the pretraining domains: the proxy, the
affinity and the pretraining weights) and an optional ``finetune_domains:`` (embedded
with the same proxy, weighted by ``finetune_weights`` for the finetuning stage). A name
is unique across both groups: it names a partition and the domain's artefact folders.

Everything is validated on load; each error names the domain and the field at fault.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

from chameleon_assets import paths

if TYPE_CHECKING:
    from chameleon_assets.core.fingerprint import FingerprintCache

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
KNOWN_FIELDS = {"name", "source", "text_field", "max_documents", "split", "licence", "description", "where"}
# Files a record source (or a glob's matches) may be, by how their names end.
RECORD_SUFFIXES = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".jsonl.zst": "jsonl", ".parquet": "parquet"}
GLOB_CHARS = re.compile(r"[*?\[]")
# A filter value: what a JSON or Parquet field can equal.
WhereValue = str | int | float | bool
GROUPS = {"domains": "pretrain", "finetune_domains": "finetune"}  # registry key -> DomainSpec.group


class RegistryError(ValueError):
    """A domain entry (or its data) is invalid; the message names domain and field."""


@dataclass(frozen=True)
class DomainSpec:
    """One validated registry entry."""

    name: str
    source: Path  # a file or folder; for kind "glob", the pattern
    kind: str  # "txt_dir" | "jsonl" | "parquet" | "hf_disk" | "glob"
    text_field: str = "text"
    max_documents: int | None = None
    split: str = "train"
    licence: str = ""
    description: str = ""
    group: str = "pretrain"  # "pretrain" (``domains:``) or "finetune" (``finetune_domains:``)
    # ((dotted field, (accepted values...)), ...) in the entry's order; () reads every record
    where: tuple[tuple[str, tuple[WhereValue, ...]], ...] = ()

    def where_text(self) -> str:
        """The filter as a person reads it: ``meta.set = 'A' and lang in ('en', 'de')``."""
        parts = []
        for name, values in self.where:
            parts.append(f"{name} = {values[0]!r}" if len(values) == 1 else f"{name} in {values!r}")
        return " and ".join(parts)


def load_registry(path: Path | None = None, base: Path | None = None, group: str | None = "pretrain"
                  ) -> list[DomainSpec]:
    """Read and validate a registry file (default ``conf/domains.yaml``); return one group's
    domains (``pretrain``, the default, or ``finetune``), or every domain with ``group=None``.

    Both groups are always validated. Relative ``source`` paths resolve against ``base``
    (default: the repository root).
    """
    path = Path(path) if path else paths.conf_dir() / "domains.yaml"
    if not path.is_file():
        raise RegistryError(f"{path}: registry file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
    specs = parse_registry(data, base=base, origin=str(path))
    return specs if group is None else [s for s in specs if s.group == group]


def parse_registry(data: Any, base: Path | None = None, origin: str = "domains.yaml") -> list[DomainSpec]:
    """Validate the parsed YAML mapping ``{"domains": [{name, source, ...}, ...],
    "finetune_domains": [...]}`` (the second list optional); return every entry, pretraining first."""
    if not isinstance(data, dict) or not isinstance(data.get("domains"), list):
        raise RegistryError(f"{origin}: expected a top-level 'domains:' list")
    unknown_keys = set(data) - set(GROUPS)
    if unknown_keys:
        raise RegistryError(f"{origin}: unknown top-level key(s) {sorted(unknown_keys)}; known: {sorted(GROUPS)}")
    if data.get("finetune_domains") is not None and not isinstance(data["finetune_domains"], list):
        raise RegistryError(f"{origin}: 'finetune_domains:' must be a list of domain entries")
    specs: list[DomainSpec] = []
    seen: dict[str, str] = {}
    for key, group in GROUPS.items():
        for i, entry in enumerate(data.get(key) or []):
            where = f"{origin}: {key}[{i}]"
            if not isinstance(entry, dict):
                raise RegistryError(f"{where}: expected a mapping with 'name' and 'source'")
            name = entry.get("name")
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise RegistryError(
                    f"{where}: field 'name': {name!r} must match {NAME_PATTERN.pattern} "
                    "(lower-case letters, digits, '_' and '-')"
                )
            where = f"{origin}: domain '{name}'" + (" (finetune_domains)" if group == "finetune" else "")
            if name in seen:
                also = "" if seen[name] == key else f" (already under '{seen[name]}:'; a name is unique across both)"
                raise RegistryError(f"{where}: field 'name': duplicate domain name{also}")
            seen[name] = key
            unknown = set(entry) - KNOWN_FIELDS
            if unknown:
                raise RegistryError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(KNOWN_FIELDS)}")
            specs.append(_validate_entry(entry, name, where, base, group))
    return specs


def _validate_entry(entry: dict, name: str, where: str, base: Path | None, group: str = "pretrain") -> DomainSpec:
    source = entry.get("source")
    if not isinstance(source, str) or not source.strip():
        raise RegistryError(f"{where}: field 'source': required, a path")
    src = paths.resolve(source, base)
    if GLOB_CHARS.search(str(src)):
        kind = "glob"
        _check_glob(src, where)
    else:
        if not src.exists():
            raise RegistryError(f"{where}: field 'source': {src} does not exist")
        if not os.access(src, os.R_OK):
            raise RegistryError(f"{where}: field 'source': {src} is not readable")
        kind = _source_kind(src, where)
    filters = _validate_where(entry.get("where"), kind, where)
    text_field = entry.get("text_field", "text")
    if not isinstance(text_field, str) or not text_field:
        raise RegistryError(f"{where}: field 'text_field': must be a non-empty string")
    max_docs = entry.get("max_documents")
    if max_docs is not None and (isinstance(max_docs, bool) or not isinstance(max_docs, int) or max_docs < 1):
        raise RegistryError(f"{where}: field 'max_documents': must be a positive integer, got {max_docs!r}")
    split = entry.get("split", "train")
    if not isinstance(split, str) or not split:
        raise RegistryError(f"{where}: field 'split': must be a non-empty string")
    return DomainSpec(
        name=name,
        source=src,
        kind=kind,
        text_field=text_field,
        max_documents=max_docs,
        split=split,
        licence=str(entry.get("licence", "")),
        description=str(entry.get("description", "")),
        group=group,
        where=filters,
    )


def _check_glob(pattern: Path, where: str) -> None:
    """A glob must match at least one file, and every match must be a record file."""
    matches = glob_files(pattern)
    if not matches:
        raise RegistryError(f"{where}: field 'source': pattern {pattern} matches no file")
    for f in matches:
        if record_format(f) is None:
            raise RegistryError(
                f"{where}: field 'source': {f} (matched by {pattern.name}) is not a supported shard "
                f"({', '.join(RECORD_SUFFIXES)}); narrow the pattern, e.g. *.parquet"
            )
        if not os.access(f, os.R_OK):
            raise RegistryError(f"{where}: field 'source': {f} (matched by {pattern.name}) is not readable")


def _validate_where(value: Any, kind: str, where: str) -> tuple[tuple[str, tuple[WhereValue, ...]], ...]:
    """``{dotted.field: value or [values]}`` -> ``((field, (values...)), ...)``; () when absent."""
    if value is None:
        return ()
    if kind in ("txt_dir", "hf_disk"):
        what = "folder of .txt files" if kind == "txt_dir" else "saved dataset"
        raise RegistryError(f"{where}: field 'where': a filter applies to .jsonl and .parquet records (files or a "
                            f"glob of them), not to a {what}")
    if not isinstance(value, dict) or not value:
        raise RegistryError(f"{where}: field 'where': expected a mapping of field to value, e.g. "
                            "{meta.redpajama_set_name: RedPajamaArXiv}")
    out = []
    for name, accepted in value.items():
        if not isinstance(name, str) or not name or any(not part for part in name.split(".")):
            raise RegistryError(f"{where}: field 'where': {name!r} is not a field name (dotted, as meta.source)")
        values = tuple(accepted) if isinstance(accepted, list) else (accepted,)
        if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
            raise RegistryError(f"{where}: field 'where': {name}: expected a string, number or boolean, or a "
                                f"non-empty list of them (got {accepted!r})")
        out.append((name, values))
    return tuple(out)


def record_format(path: Path | str) -> str | None:
    """``jsonl`` or ``parquet`` by the file name's ending (``.jsonl``, ``.jsonl.gz``,
    ``.jsonl.zst``, ``.parquet``), else None."""
    name = str(path).lower()
    for suffix, fmt in RECORD_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def glob_files(pattern: Path) -> list[Path]:
    """The files ``pattern`` matches (``**`` crosses folders), sorted: a glob source's order."""
    return sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())


def glob_root(pattern: Path) -> Path:
    """The folder above a pattern's first wildcard: what a match's name is relative to."""
    parts = pattern.parts
    for i, part in enumerate(parts):
        if GLOB_CHARS.search(part):
            return Path(*parts[:i])
    return pattern.parent


def _source_kind(src: Path, where: str) -> str:
    if src.is_dir():
        if (src / "dataset_info.json").exists() or (src / "dataset_dict.json").exists():
            return "hf_disk"
        if not any(src.glob("*.txt")):
            raise RegistryError(
                f"{where}: field 'source': folder {src} holds no .txt files and is not a "
                "dataset saved with save_to_disk"
            )
        return "txt_dir"
    fmt = record_format(src)
    if fmt is not None:
        return fmt
    raise RegistryError(
        f"{where}: field 'source': {src.name} is not a supported source "
        "(.txt folder, .jsonl, .jsonl.gz, .jsonl.zst, .parquet, a glob of such files, or a save_to_disk dataset folder)"
    )


def source_files(spec: DomainSpec) -> list[Path]:
    """The files whose bytes make up the domain's raw data, in a fixed order."""
    if spec.kind == "txt_dir":
        return sorted(spec.source.glob("*.txt"))
    if spec.kind == "hf_disk":
        return sorted(p for p in spec.source.rglob("*") if p.is_file())
    if spec.kind == "glob":
        return glob_files(spec.source)
    return [spec.source]


def source_fingerprint(spec: DomainSpec, cache: "FingerprintCache | None" = None) -> str:
    """sha256 over the raw bytes of every source file plus the fields that change the text.

    With a ``cache``, a file whose size and mtime are unchanged is not read again; the
    files that are (new or changed ones) are hashed on every core. A filter joins the
    hash only when there is one, so the entries without one keep the versions they had.
    """
    from chameleon_assets.core.fingerprint import FingerprintCache, files_fingerprint

    root = glob_root(spec.source) if spec.kind == "glob" else spec.source
    named = [(str(f.relative_to(root)) if root.is_dir() else f.name, f) for f in source_files(spec)]
    extra = f"|{spec.kind}|{spec.text_field}|{spec.max_documents}|{spec.split}"
    if spec.where:
        extra += "|where=" + json.dumps([[name, list(values)] for name, values in spec.where])
    return files_fingerprint(named, cache or FingerprintCache(None), extra)


def iter_documents(spec: DomainSpec) -> Iterator[str]:
    """Yield the domain's non-empty documents in source order (at most ``max_documents``).

    A document that is empty or holds only whitespace counts as empty and is skipped, so a
    source of whitespace-only documents has no documents, exactly like an empty source.
    Non-empty documents are yielded unchanged (their whitespace is kept). With a filter
    that no record matches, a ``RegistryError`` names the filter and the values seen.
    (``core.documents`` reads the sources; this is its sequential form.)
    """
    from chameleon_assets.core.documents import iter_documents as read

    return read(spec)
