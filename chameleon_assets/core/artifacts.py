"""Atomic artefact writing: an interrupted run never leaves a half-written file.

Every file is written under a temporary name in the same directory and renamed into
place; multi-file artefacts (a token shard set, a saved model) are built in a temporary
directory that replaces the old one in one step, so readers see either the old complete
artefact or the new complete one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``target`` on success.

    On an exception the temporary directory is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file next to ``target``; rename it over ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def remove_tree(path: Path) -> None:
    """Delete a directory (e.g. a finished run's checkpoint); a missing one is fine."""
    shutil.rmtree(path, ignore_errors=True)


def write_json(target: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(target) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: Path, h: "hashlib._Hash | None" = None) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(*parts: str) -> str:
    """Hex sha256 of the parts joined by NUL bytes."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def point_current(version_dir: Path) -> None:
    """Make ``<parent>/current`` a symbolic link to ``version_dir`` (replaced atomically).

    Only for people and outside tools (``lm_eval --model_args pretrained=.../current``);
    the pipeline itself always reads the folder its input's data version names. The
    folder's mtime is set to now, so ``prune_versions`` keeps the versions used last.
    """
    version_dir = Path(version_dir)
    os.utime(version_dir)
    link = version_dir.parent / "current"
    tmp = version_dir.parent / f".current.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    os.symlink(version_dir.name, tmp)
    os.replace(tmp, link)


def prune_versions(parent: Path, keep: int = 3) -> list[Path]:
    """Delete all but the ``keep`` most recently used version folders under ``parent``.

    The folder ``current`` points to is always kept. Returns what was deleted.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    current = (parent / "current").resolve() if (parent / "current").is_symlink() else None
    versions = [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]
    versions.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    doomed = [p for p in versions[keep:] if p.resolve() != current]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed
