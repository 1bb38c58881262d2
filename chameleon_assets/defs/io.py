"""The IO manager: every output stored under its data version, every input loaded by version.

Dagster's default IO manager keeps one file per asset partition and overwrites it on
each run, so a step could read a value that a newer or concurrent run wrote after the
step's inputs were recorded. Here each output (a small descriptor: paths, counts, its
own ``data_version``) is written once to ``<values>/<asset>/<partition>/<version>.pkl``
and never changed; an input is loaded from the file named by the data version of the
upstream partition's latest materialisation, the same record Dagster stores as the
step's input provenance. The large artefacts the descriptors point to live in
version-named folders too (``paths``), so a descriptor and its files always agree.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any, Callable

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import atomic_file, pause_point, verify_dir

DATA_VERSION_TAG = "dagster/data_version"
UNPARTITIONED = "__all__"



def latest_record(instance: dg.DagsterInstance, key: str | dg.AssetKey, partition: str | None = None):
    """The event record of the latest materialisation of ``key`` (``[partition]``), or None."""
    asset_key = key if isinstance(key, dg.AssetKey) else dg.AssetKey(key)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0] if records else None


def latest_version(
    instance: dg.DagsterInstance, key: str | dg.AssetKey, partition: str | None = None, observed: bool = False
) -> str | None:
    """The data version of the latest materialisation (``observed``: observation) of ``key[partition]``."""
    if not observed:
        record = latest_record(instance, key, partition)
        return record.asset_materialization.tags.get(DATA_VERSION_TAG) if record else None
    asset_key = key if isinstance(key, dg.AssetKey) else dg.AssetKey(key)
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0].event_log_entry.asset_observation.tags.get(DATA_VERSION_TAG) if records else None


def versions_text(versions: dict[str, str]) -> str:
    """``a=v1,b=v2``: a mapping of data versions in a fixed order, for hashing."""
    return ",".join(f"{k}={v}" for k, v in sorted(versions.items()))


def partition_dir(partition: str | None) -> str:
    """The relative folder of a partition: its key, a multi-partition key's dimensions as
    nested folders (``uniform|0`` -> ``uniform/0``), ``__all__`` when unpartitioned."""
    return str(partition).replace("|", "/") if partition else UNPARTITIONED


def value_path(key: dg.AssetKey, partition: str | None, version: str) -> Path:
    return paths.values_dir() / "/".join(key.path) / partition_dir(partition) / f"{version}.pkl"


def load_value(instance: dg.DagsterInstance, key: str | dg.AssetKey, partition: str | None = None) -> Any:
    """The value of the latest materialisation of ``key`` (``[partition]``), loaded by its data version."""
    asset_key = key if isinstance(key, dg.AssetKey) else dg.AssetKey(key)
    version = latest_version(instance, asset_key, partition)
    if version is None:
        name = asset_key.to_user_string() + (f"[{partition}]" if partition else "")
        raise FileNotFoundError(f"{name} has never been materialised; run `chameleon run` (or `chameleon sync`)")
    return load_version(asset_key, partition, version)


def load_version(key: str | dg.AssetKey, partition: str | None, version: str) -> Any:
    """The value of data version ``version`` of ``key[partition]``, whose files must be intact.

    Steps use it to read exactly the version their input names (the weights name the
    corpus versions their affinity was computed from, a base model the ones it trained on).
    A missing or damaged artefact raises ArtefactDamaged (the policy rebuilds it first,
    so a step meets one only if it was damaged while the step ran).
    """
    asset_key = key if isinstance(key, dg.AssetKey) else dg.AssetKey(key)
    name = asset_key.to_user_string() + (f"[{partition}]" if partition else "")
    path = value_path(asset_key, partition, version)
    if not path.is_file():
        raise ArtefactDamaged(f"{name}: no stored value for data version {version} ({path}); "
                              "run `chameleon run` to rebuild it")
    try:
        value = _read_value(path)
    except Exception as exc:  # noqa: BLE001
        raise ArtefactDamaged(f"{name}: the stored value of data version {version} ({path}) is unreadable "
                              f"({type(exc).__name__}); run `chameleon run` to rebuild it") from exc
    problem = artefact_problem(value)
    if problem:
        raise ArtefactDamaged(f"{name}: the files of data version {version} are damaged: {problem}; "
                              "run `chameleon run` to rebuild them")
    return value


class ArtefactDamaged(FileNotFoundError):
    """An artefact a step needs is missing or is not what was written; names it and its file."""


def artefact_dir(value: Any) -> Path | None:
    """The folder of files a stored value describes, if this pipeline wrote it.

    None for values without files and for a user's own proxy checkpoint (not ours to check).
    """
    if getattr(value, "trained_here", True) is False:
        return None
    folder = getattr(value, "path", None) or getattr(value, "directory", None)
    return Path(folder) if folder else None


def artefact_problem(value: Any, deep: bool = False) -> str | None:
    """What is wrong with the files behind ``value`` (``artifacts.verify_dir``), or None."""
    folder = artefact_dir(value)
    return verify_dir(folder, deep=deep) if folder is not None else None


def _read_value(path: Path) -> Any:
    with open(path, "rb") as fh:
        return pickle.load(fh)


def stored_descriptor(key: str, partition: str | None, version: str) -> Any | None:
    """The stored value of ``key[partition]`` at ``version`` without checking its files; None if unreadable."""
    try:
        return _read_value(value_path(dg.AssetKey(key), partition, version))
    except Exception:  # noqa: BLE001 (missing or damaged)
        return None


def damage(key: dg.AssetKey, partition: str | None, version: str | None) -> str | None:
    """Why the recorded version ``version`` of ``key[partition]`` cannot be used as is, or None.

    Its stored value is gone or unreadable, or its files are missing, truncated or were
    never completed. A size check only, cheap enough for every policy evaluation.
    """
    if version is None:
        return None
    path = value_path(key, partition, version)
    try:
        value = _read_value(path)
    except FileNotFoundError:
        return f"its stored value {path} is missing"
    except Exception as exc:  # noqa: BLE001 (a damaged pickle raises almost anything)
        return f"its stored value {path} is unreadable ({type(exc).__name__})"
    return artefact_problem(value)


class VersionedValueIOManager(dg.ConfigurableIOManager):
    """Writes each output once under its data version; loads inputs by recorded version.

    Every output object carries a ``data_version`` attribute (the same string the asset
    reports to Dagster). Inputs mapped to several partitions, or declared with input
    metadata ``as_dict`` (``partitions.ALL_PARTITIONS``), arrive as ``{partition: value}``;
    with ``existing_only``, partitions never materialised or damaged are left out (an
    unpartitioned input with ``existing_only`` arrives as None then).
    """

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        version = getattr(obj, "data_version", None)
        if not version:
            raise TypeError(f"{context.asset_key.to_user_string()}: output has no data_version to store it under")
        partition = context.partition_key if context.has_partition_key else None
        _store(value_path(context.asset_key, partition, version), obj)

    def load_input(self, context: dg.InputContext) -> Any:
        instance = context.instance
        meta = context.definition_metadata or {}
        if not context.has_asset_partitions:
            if meta.get("existing_only"):  # an optional input: None when never materialised or damaged
                version = latest_version(instance, context.asset_key)
                try:
                    return None if version is None else load_version(context.asset_key, None, version)
                except ArtefactDamaged as exc:
                    context.log.warning(f"left out: {exc}")
                    return None
            return load_value(instance, context.asset_key)
        keys = sorted(context.asset_partition_keys)
        if not meta.get("existing_only"):
            values = {k: load_value(instance, context.asset_key, k) for k in keys}
        else:  # never materialised, or damaged (rebuilt by the policy once its own inputs allow): left out
            values = {}
            for k in keys:
                version = latest_version(instance, context.asset_key, k)
                if version is None:
                    continue
                try:
                    values[k] = load_version(context.asset_key, k, version)
                except ArtefactDamaged as exc:
                    context.log.warning(f"left out: {exc}")
        as_dict = bool(meta.get("as_dict"))
        if len(values) == 1 and not as_dict:
            return next(iter(values.values()))
        return values


def stored_value(key: str, partition: str | None, version: str) -> Any | None:
    """The value stored for data version ``version`` of ``key[partition]``, if its files are intact.

    A version is a content address (a hash of everything that made it), so a value found
    here is exactly what recomputing would give: assets reuse it instead of retraining.
    Its files are checked byte for byte against their manifest first; a damaged version
    is rebuilt.
    """
    path = value_path(dg.AssetKey(key), partition, version)
    if not path.is_file():
        return None
    try:
        value = _read_value(path)
    except Exception:  # noqa: BLE001 (a damaged pickle raises almost anything): rebuild it
        return None
    return None if artefact_problem(value, deep=True) else value


def one_writer(fn: Callable) -> Callable:
    """Decorate an asset's compute function: one process at a time per asset partition.

    Two runs of the same partition (two CLIs, or the CLI and the UI's automation) would
    compute the same version twice and write the same folders at once. Under this lock
    the second waits; it then finds the version the first stored (``stored_value``) and
    reuses it. The value is stored before the lock is released, so the waiter sees it.
    Place it directly under ``@dg.asset``.
    """
    from chameleon_assets.core.locks import file_lock

    @functools.wraps(fn)
    def step(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
        partition = context.partition_key if context.has_partition_key else None
        key = context.asset_key
        lock = paths.artifacts_dir() / ".locks" / "/".join(key.path) / f"{partition_dir(partition)}.lock"
        name = key.to_user_string() + (f"[{partition}]" if partition else "")

        def waiting(who: str) -> None:
            context.log.info(f"{name}: waiting for {who} (it is materialising the same partition)")

        with file_lock(lock, f"materialising {name} (run {context.run_id})", on_wait=waiting):
            pause_point("step", lock)
            result = fn(context, *args, **kwargs)
            value = result.value if isinstance(result, dg.Output) else result
            version = getattr(value, "data_version", None)
            if version:  # the single writer of this partition: its value replaces any damaged one
                _store(value_path(key, partition, version), value, replace=True)
        return result

    return step


def _store(target: Path, value: Any, replace: bool = False) -> None:
    """Write ``value`` to ``target`` atomically, unless (without ``replace``) a readable one is there.

    A version has one content, so an intact stored value is kept; a damaged one, or the
    descriptor of a version just rebuilt (its MLflow run id is new), replaces it.
    """
    if target.is_file() and not replace:
        try:
            _read_value(target)
            return
        except Exception:  # noqa: BLE001 (damaged: replace it)
            pass
    with atomic_file(target, "wb") as fh:
        pickle.dump(value, fh)


ADOPTED_MARKER = ".manifests-adopted"


def adopt_legacy_artefacts() -> list[Path]:
    """Once per data directory: give a manifest to artefact folders written before manifests existed.

    Those folders were committed by a rename, so they are complete unless damaged since,
    which nothing can tell any more; adopting them keeps an upgrade from rebuilding (and
    retraining) everything. After this, a folder without a manifest is damaged. Returns
    the folders adopted.
    """
    from chameleon_assets.core.artifacts import MANIFEST, manifest_of, write_json

    marker = paths.values_dir() / ADOPTED_MARKER
    if marker.exists():
        return []
    adopted = []
    for pkl in sorted(paths.values_dir().rglob("*.pkl")) if paths.values_dir().is_dir() else []:
        try:
            folder = artefact_dir(_read_value(pkl))
        except Exception:  # noqa: BLE001 (damaged: the policy rebuilds it)
            continue
        if folder is not None and folder.is_dir() and not (folder / MANIFEST).exists() \
                and not folder.name.startswith("."):
            write_json(folder / MANIFEST, manifest_of(folder))
            adopted.append(folder)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("artefact folders written before manifests existed were adopted once\n")
    return adopted
