"""The domain registry (``conf/domains.yaml``) and the one loader for domain documents.

A domain's source is one of:

* a folder of ``.txt`` files (one document per file, read in sorted order),
* a ``.jsonl`` or ``.jsonl.gz`` file with one JSON object per line,
* a ``.parquet`` file,
* a Hugging Face dataset saved with ``save_to_disk`` (a folder with ``dataset_info.json``
  or, for a ``DatasetDict``, ``dataset_dict.json`` plus a ``split``).

Two groups share one entry format: ``domains:`` (the pretraining domains: the proxy, the
affinity and the pretraining weights) and an optional ``finetune_domains:`` (embedded
with the same proxy, weighted by ``finetune_weights`` for the finetuning stage). A name
is unique across both groups: it names a partition and the domain's artefact folders.

Everything is validated on load; each error names the domain and the field at fault.
"""

from __future__ import annotations

import gzip
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
KNOWN_FIELDS = {"name", "source", "text_field", "max_documents", "split", "licence", "description"}
GROUPS = {"domains": "pretrain", "finetune_domains": "finetune"}  # registry key -> DomainSpec.group


class RegistryError(ValueError):
    """A domain entry (or its data) is invalid; the message names domain and field."""


@dataclass(frozen=True)
class DomainSpec:
    """One validated registry entry."""

    name: str
    source: Path
    kind: str  # "txt_dir" | "jsonl" | "parquet" | "hf_disk"
    text_field: str = "text"
    max_documents: int | None = None
    split: str = "train"
    licence: str = ""
    description: str = ""
    group: str = "pretrain"  # "pretrain" (``domains:``) or "finetune" (``finetune_domains:``)


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
    if not src.exists():
        raise RegistryError(f"{where}: field 'source': {src} does not exist")
    if not os.access(src, os.R_OK):
        raise RegistryError(f"{where}: field 'source': {src} is not readable")
    kind = _source_kind(src, where)
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
    )


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
    name = src.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    raise RegistryError(
        f"{where}: field 'source': {src.name} is not a supported source "
        "(.txt folder, .jsonl, .jsonl.gz, .parquet, or a save_to_disk dataset folder)"
    )


def source_files(spec: DomainSpec) -> list[Path]:
    """The files whose bytes make up the domain's raw data, in a fixed order."""
    if spec.kind == "txt_dir":
        return sorted(spec.source.glob("*.txt"))
    if spec.kind == "hf_disk":
        return sorted(p for p in spec.source.rglob("*") if p.is_file())
    return [spec.source]


def source_fingerprint(spec: DomainSpec, cache: "FingerprintCache | None" = None) -> str:
    """sha256 over the raw bytes of every source file plus the fields that change the text.

    With a ``cache``, a file whose size and mtime are unchanged is not read again.
    """
    from chameleon_assets.core.fingerprint import FingerprintCache, files_fingerprint

    named = [(str(f.relative_to(spec.source)) if spec.source.is_dir() else f.name, f) for f in source_files(spec)]
    extra = f"|{spec.kind}|{spec.text_field}|{spec.max_documents}|{spec.split}"
    return files_fingerprint(named, cache or FingerprintCache(None), extra)


def iter_documents(spec: DomainSpec) -> Iterator[str]:
    """Yield the domain's non-empty documents in source order (at most ``max_documents``).

    A document that is empty or holds only whitespace counts as empty and is skipped, so a
    source of whitespace-only documents has no documents, exactly like an empty source.
    Non-empty documents are yielded unchanged (their whitespace is kept).
    """
    count = 0
    for text in _raw_documents(spec):
        if not text or text.isspace():
            continue
        yield text
        count += 1
        if spec.max_documents is not None and count >= spec.max_documents:
            return


def _raw_documents(spec: DomainSpec) -> Iterator[str]:
    where = f"domain '{spec.name}'"
    if spec.kind == "txt_dir":
        for f in source_files(spec):
            try:
                yield f.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise RegistryError(f"{where}: file {f}: not UTF-8 text ({exc})") from exc
    elif spec.kind == "jsonl":
        opener = gzip.open if spec.source.name.lower().endswith(".gz") else open
        with opener(spec.source, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RegistryError(f"{where}: file {spec.source} line {lineno}: invalid JSON ({exc})") from exc
                yield _text_of(record, spec, f"file {spec.source} line {lineno}")
    elif spec.kind == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(spec.source)
        if spec.text_field not in table.column_names:
            raise RegistryError(
                f"{where}: field 'text_field': column {spec.text_field!r} not in {spec.source} "
                f"(columns: {table.column_names})"
            )
        for i, value in enumerate(table.column(spec.text_field).to_pylist()):
            yield _text_of({spec.text_field: value}, spec, f"file {spec.source} row {i}")
    elif spec.kind == "hf_disk":
        import datasets

        ds = datasets.load_from_disk(str(spec.source))
        if isinstance(ds, datasets.DatasetDict):
            if spec.split not in ds:
                raise RegistryError(f"{where}: field 'split': {spec.split!r} not in {sorted(ds)}")
            ds = ds[spec.split]
        if spec.text_field not in ds.column_names:
            raise RegistryError(
                f"{where}: field 'text_field': column {spec.text_field!r} not in dataset "
                f"{spec.source} (columns: {ds.column_names})"
            )
        for i, value in enumerate(ds[spec.text_field]):
            yield _text_of({spec.text_field: value}, spec, f"dataset {spec.source} row {i}")


def _text_of(record: Any, spec: DomainSpec, where: str) -> str:
    if not isinstance(record, dict) or spec.text_field not in record:
        raise RegistryError(f"domain '{spec.name}': {where}: field 'text_field': no {spec.text_field!r} key")
    value = record[spec.text_field]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RegistryError(
            f"domain '{spec.name}': {where}: field 'text_field': {spec.text_field!r} is "
            f"{type(value).__name__}, expected a string"
        )
    return value
