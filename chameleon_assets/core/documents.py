"""The one loader for domain documents: every source kind, read unit by unit, filtered, streamed.

A source is read as a fixed sequence of *units*, each readable on its own:

* a folder of ``.txt`` files, or a dataset saved with ``save_to_disk``: one unit;
* a ``.jsonl``, ``.jsonl.gz`` or ``.jsonl.zst`` file: one unit (a compressed stream
  cannot be entered in the middle);
* a ``.parquet`` file: one unit per row group;
* a glob: the units of each matching file, files in sorted order.

Reading a unit streams it: JSON lines one at a time, Parquet in batches of
``PARQUET_BATCH_ROWS`` rows, so memory holds one batch however large the file, and a
100 GB source is never loaded whole. ``core.corpus`` hands units to worker processes
(one per core) and joins their results in unit order, so the documents, and the shards
made of them, are the same for any number of workers.

With a filter (``where:`` in the registry), a record is read when each named field
equals one of its values. Fields are dotted paths into nested JSON objects or Parquet
structs (a column literally named ``meta.set`` is used first when there is one). Parquet
reads the filter's columns of a row group first and its text column only when a row
matched. JSON lines whose text cannot hold an accepted value are skipped before they are
parsed (``Filter.literals``): with seven domains filtered out of one dataset each
domain parses only its own lines.

Errors are one line naming the domain and the file (and the line or the field): a file
that is not what its name says (``not a gzip file``, ``not a readable Parquet file``), a
cut or corrupt one, a line that is not JSON or not UTF-8, a damaged file of a saved
dataset, a field the records lack, a filter that matches nothing.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from chameleon_assets.core.registry import DomainSpec, RegistryError, record_format, source_files

PARQUET_BATCH_ROWS = 1024
# The first records of each JSON lines file are always parsed, prefilter or not: a field
# they lack is reported, and a filter that matches nothing can say which values exist.
PARSE_FIRST = 100
# How many distinct values of a filter's field an error message lists.
SEEN_VALUES = 12
_MISSING = object()
# A JSON string literal that every encoder writes the same way: printable ASCII with no
# quote, backslash or slash (json.dumps, orjson, Rust's serde, pandas, Spark; some
# encoders escape "/" as "\/" and may write non-ASCII as \uXXXX, so those never prefilter).
_VERBATIM = re.compile(r"[A-Za-z0-9 _.,:;()+=@#%&-]*")


@dataclass(frozen=True)
class Unit:
    """One independently readable piece of a source: a file, or a Parquet row group of one."""

    path: str
    fmt: str  # "jsonl" | "parquet" | "txt_dir" | "hf_disk"
    row_group: int | None = None  # Parquet only
    size: int = 0  # bytes on disk that reading it covers (a row group's: its column chunks, compressed)

    def where(self) -> str:
        """How errors name it: ``file <path>`` (with the row group for Parquet)."""
        return f"file {self.path}" + (f" row group {self.row_group}" if self.row_group is not None else "")


@dataclass
class Scan:
    """What reading units found: records read, records the filter kept, the bytes covered
    and, per filter field, some distinct values seen (for the no-match message)."""

    records: int = 0
    matched: int = 0
    bytes: int = 0
    seen: dict[str, list] = field(default_factory=dict)

    def see(self, name: str, value: Any) -> None:
        values = self.seen.setdefault(name, [])
        if len(values) < SEEN_VALUES and value not in values and isinstance(value, (str, int, float, bool)):
            values.append(value)

    def add(self, other: "Scan") -> None:
        """Fold in another unit's scan."""
        self.records += other.records
        self.matched += other.matched
        self.bytes += other.bytes
        for name, values in other.seen.items():
            for value in values:
                self.see(name, value)


class Filter:
    """A registry entry's ``where``: each (dotted) field must equal one of its values."""

    def __init__(self, spec: DomainSpec):
        self.spec = spec
        self.fields = spec.where
        # The JSON literals a line must contain to possibly match, per field whose values
        # are all plain strings (see _VERBATIM); fields of other values are not prefiltered.
        # A line holding none of a field's literals cannot match and is not parsed.
        self.literals = [tuple(json.dumps(v) for v in values) for _, values in self.fields
                         if all(isinstance(v, str) and _VERBATIM.fullmatch(v) for v in values)]

    def __bool__(self) -> bool:
        return bool(self.fields)

    def accepts(self, record: dict, scan: Scan, where: str) -> bool:
        """Whether ``record`` passes; a field it lacks is an error naming ``where``."""
        ok = True
        for name, values in self.fields:
            value = lookup(record, name)
            if value is _MISSING:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise RegistryError(f"domain '{self.spec.name}': {where}: field 'where': the record has no "
                                    f"field {name!r} (its keys: {keys})")
            scan.see(name, value)
            ok = ok and _equals_any(value, values)
        return ok


def _equals_any(value: Any, values: tuple) -> bool:
    # YAML's 1 must not match JSON's true (Python's 1 == True), nor "1" match 1.
    return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in values)


def lookup(record: Any, name: str) -> Any:
    """``record[name]``, else the dotted path ``a.b.c`` through nested mappings; ``_MISSING`` if absent."""
    if isinstance(record, dict) and name in record:
        return record[name]
    value = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


# --- Units ---------------------------------------------------------------------------------

def units(spec: DomainSpec) -> list[Unit]:
    """The source's units in reading order (Parquet footers are read to count row groups)."""
    if spec.kind in ("txt_dir", "hf_disk"):
        return [Unit(str(spec.source), spec.kind, size=sum(f.stat().st_size for f in source_files(spec)))]
    out = []
    for f in source_files(spec):
        fmt = record_format(f)
        if fmt == "parquet":
            meta = _parquet_file(spec, f).metadata
            for i in range(meta.num_row_groups):
                group = meta.row_group(i)
                size = sum(group.column(j).total_compressed_size for j in range(group.num_columns))
                out.append(Unit(str(f), "parquet", i, size))
        else:
            out.append(Unit(str(f), "jsonl", size=f.stat().st_size))
    return out


def read_unit(spec: DomainSpec, unit: Unit, scan: Scan | None = None) -> Iterator[str]:
    """The texts of one unit that pass the filter, in order, empty ones included (the
    caller skips them); ``scan`` counts what was read."""
    scan = scan if scan is not None else Scan()
    scan.bytes += unit.size
    if unit.fmt == "jsonl":
        yield from _jsonl(spec, Path(unit.path), scan)
    elif unit.fmt == "parquet":
        yield from _parquet(spec, unit, scan)
    elif unit.fmt == "txt_dir":
        for f in source_files(spec):
            scan.records += 1
            scan.matched += 1
            try:
                yield f.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise RegistryError(f"domain '{spec.name}': file {f}: not UTF-8 text ({exc})") from exc
    elif unit.fmt == "hf_disk":
        yield from _hf_disk(spec, scan)
    else:
        raise ValueError(f"unknown unit format {unit.fmt!r}")


def iter_documents(spec: DomainSpec) -> Iterator[str]:
    """The domain's non-empty documents in source order, at most ``max_documents``
    (``registry.iter_documents`` documents the rules); one process, unit after unit."""
    count = 0
    scan = Scan()
    for unit in units(spec):
        for text in read_unit(spec, unit, scan):
            if not text or text.isspace():
                continue
            yield text
            count += 1
            if spec.max_documents is not None and count >= spec.max_documents:
                return
    check_matched(spec, scan)


def check_matched(spec: DomainSpec, scan: Scan) -> None:
    """A filter that kept no record of the whole source is an error naming it and what the
    records hold instead (the values seen are those of parsed records)."""
    if not spec.where or scan.matched:
        return
    files = len(source_files(spec))
    seen = "; ".join(f"{name} values seen: {', '.join(map(repr, values))}" for name, values in scan.seen.items()
                     if values)
    raise RegistryError(
        f"domain '{spec.name}': field 'where': no record of {scan.records:,} in {files} file{'s' * (files != 1)} "
        f"({spec.source}) has {spec.where_text()}" + (f" ({seen})" if seen else "")
    )


# --- Formats -------------------------------------------------------------------------------

def _open_bytes(path: Path) -> io.BufferedIOBase:
    """A byte stream over a .jsonl, .jsonl.gz or .jsonl.zst file (zstd through pyarrow's codec).

    Lines are read as bytes and decoded one by one, so an encoding error names its exact
    line and a line the filter skips is never decoded."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import pyarrow as pa

        return io.BufferedReader(pa.input_stream(str(path), compression="zstd"), buffer_size=1 << 20)
    return open(path, "rb", buffering=1 << 20)


# What reading a damaged compressed stream raises: gzip (BadGzipFile is an OSError, a cut
# file an EOFError, a bad block zlib.error) and pyarrow's zstd codec (OSError).
_CORRUPT = (OSError, EOFError, zlib.error)
# How a compressed stream's first bytes read: a file that does not start so is not one.
_MAGIC = {".gz": ("gzip", b"\x1f\x8b"), ".zst": ("zstd", b"\x28\xb5\x2f\xfd")}


def _jsonl(spec: DomainSpec, path: Path, scan: Scan) -> Iterator[str]:
    where = f"domain '{spec.name}'"
    flt = Filter(spec)
    literals = [tuple(lit.encode() for lit in lits) for lits in flt.literals]
    lineno = 0
    try:
        with _open_bytes(path) as fh:
            records = 0
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                scan.records += 1
                records += 1
                if records > PARSE_FIRST and literals and not all(any(lit in raw for lit in lits) for lits in literals):
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise RegistryError(f"{where}: file {path} line {lineno}: not UTF-8 text ({exc.reason} at byte "
                                        f"{exc.start})") from exc
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RegistryError(f"{where}: file {path} line {lineno}: invalid JSON ({exc})") from exc
                if flt and not flt.accepts(record, scan, f"file {path} line {lineno}"):
                    continue
                scan.matched += 1
                yield _text_of(record, spec, f"file {path} line {lineno}")
    except _CORRUPT as exc:
        kind, magic = next((v for suffix, v in _MAGIC.items() if path.name.lower().endswith(suffix)), ("", b""))
        with open(path, "rb") as fh:
            head = fh.read(8)
        if kind and not head.startswith(magic):
            raise RegistryError(f"{where}: file {path}: not a {kind} file (it starts with {head!r}: "
                                f"{_first_line(exc)})") from exc
        raise RegistryError(f"{where}: file {path}: corrupt or truncated {kind + ' ' if kind else ''}data after "
                            f"line {lineno} ({_first_line(exc)})") from exc


def _parquet_file(spec: DomainSpec, path: Path):  # noqa: ANN202 (a pyarrow.parquet.ParquetFile)
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise RegistryError(f"domain '{spec.name}': file {path}: not a readable Parquet file ({_first_line(exc)})") \
            from exc


def _parquet(spec: DomainSpec, unit: Unit, scan: Scan) -> Iterator[str]:
    import pyarrow as pa

    path = Path(unit.path)
    where = f"domain '{spec.name}': {unit.where()}"
    pf = _parquet_file(spec, path)
    names = pf.schema_arrow.names
    if spec.text_field not in names:
        raise RegistryError(f"domain '{spec.name}': field 'text_field': column {spec.text_field!r} not in {path} "
                            f"(columns: {names})")
    text_type = pf.schema_arrow.field(spec.text_field).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise RegistryError(f"domain '{spec.name}': file {path}: field 'text_field': column {spec.text_field!r} "
                            f"is {text_type}, expected strings")
    try:
        rows = pf.metadata.row_group(unit.row_group).num_rows
        scan.records += rows
        keep = None
        if spec.where:
            keep = _parquet_mask(spec, pf, unit.row_group, scan, where)
            if not any(keep):
                return
        start = 0
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[unit.row_group],
                                     columns=[spec.text_field], use_threads=False):
            column = batch.column(0)
            if keep is not None:
                column = column.filter(pa.array(keep[start:start + len(column)], type=pa.bool_()))
            start += len(batch)
            scan.matched += len(column)
            for value in column.to_pylist():
                yield "" if value is None else value
    except (pa.ArrowException, OSError) as exc:
        raise RegistryError(f"{where}: corrupt Parquet data ({_first_line(exc)})") from exc


def _parquet_mask(spec: DomainSpec, pf, row_group: int, scan: Scan, where: str) -> list[bool]:  # noqa: ANN001
    """Per row of the row group, whether every filter field equals one of its values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = pf.schema_arrow
    columns = {}
    for name, _ in spec.where:
        top = name if name in schema.names else name.split(".")[0]
        if top not in schema.names:
            raise RegistryError(f"{where}: field 'where': no column {top!r} for {name!r} (columns: {schema.names})")
        columns[name] = top
    table = pf.read_row_group(row_group, columns=sorted(set(columns.values())), use_threads=False)
    keep = [True] * table.num_rows
    for name, values in spec.where:
        column = table.column(columns[name])
        for part in ([] if name == columns[name] else name.split(".")[1:]):
            struct = column.type
            if not pa.types.is_struct(struct) or struct.get_field_index(part) < 0:
                fields = [struct.field(i).name for i in range(struct.num_fields)] if pa.types.is_struct(struct) else []
                raise RegistryError(f"{where}: field 'where': {name!r}: column {columns[name]!r} has no field "
                                    f"{part!r}" + (f" (its fields: {fields})" if fields else f" (it is {struct})"))
            column = pc.struct_field(column, part)  # a null struct gives a null field
        for i, value in enumerate(column.to_pylist()):
            scan.see(name, value)
            keep[i] = keep[i] and _equals_any(value, values)
    return keep


def _hf_disk(spec: DomainSpec, scan: Scan) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(spec.source))
        if isinstance(ds, datasets.DatasetDict):
            if spec.split not in ds:
                raise RegistryError(f"domain '{spec.name}': field 'split': {spec.split!r} not in {sorted(ds)}")
            ds = ds[spec.split]
        if spec.text_field not in ds.column_names:
            raise RegistryError(
                f"domain '{spec.name}': field 'text_field': column {spec.text_field!r} not in dataset "
                f"{spec.source} (columns: {ds.column_names})"
            )
        texts = ds[spec.text_field]
    except RegistryError:
        raise
    # What a damaged or foreign folder makes ``datasets`` raise: a missing file (OSError), bad
    # JSON or Arrow bytes (ValueError, pyarrow's errors are ValueErrors or OSErrors), a
    # state.json lacking its keys (KeyError, TypeError).
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"domain '{spec.name}': {_hf_disk_damage(spec.source, exc)}") from exc
    for i, value in enumerate(texts):
        scan.records += 1
        scan.matched += 1
        yield _text_of({spec.text_field: value}, spec, f"dataset {spec.source} row {i}")


def _hf_disk_damage(folder: Path, exc: BaseException) -> str:
    """Which file of a ``save_to_disk`` folder ``load_from_disk`` failed on, and why: the first
    JSON file that does not parse or Arrow file that does not read, else the folder itself."""
    import pyarrow as pa

    if not any((folder / name).is_file() for name in ("state.json", "dataset_dict.json")):
        return (f"folder {folder}: not a dataset saved with save_to_disk (it has neither state.json nor "
                f"dataset_dict.json)")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for f in files:
        if f.suffix == ".json":
            try:
                json.loads(f.read_bytes())
            except ValueError as bad:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                return f"file {f}: invalid JSON ({_first_line(bad)})"
    for f in files:
        if f.suffix == ".arrow":
            try:
                with pa.memory_map(str(f)) as source:
                    for _ in pa.ipc.open_stream(source):
                        pass
            except (pa.ArrowException, OSError) as bad:
                return f"file {f}: not a readable Arrow file ({_first_line(bad)})"
    return f"folder {folder}: not a readable dataset saved with save_to_disk ({_first_line(exc)})"


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
