"""Artefact writing and checking: nothing half-written is ever read, nothing damaged is used.

**Atomic and durable.** Every file is written under a temporary name in its directory,
flushed to disk (``fsync``) and renamed into place, and the directory is ``fsync``-ed
so the rename survives a power cut. Multi-file artefacts (a token shard set, a saved
model) are built in a temporary directory (``atomic_dir``) whose files and itself are
synced before it is renamed to its target. Targets are version-named folders
(``paths``), so a new version never replaces an old one in place; when a folder must
be replaced (a damaged version rebuilt, a default-corpus domain rebuilt), the two are
swapped with one ``renameat2(RENAME_EXCHANGE)``, so the target path never goes missing.

**Checked.** ``atomic_dir`` writes ``.manifest.json`` (every file's size and sha256) as
its last file. ``verify_dir`` compares a folder with its manifest: by size (cheap: the
policy runs it for every materialised partition on every evaluation) or by content
(before a stored version is reused). A folder without a manifest is damaged: it was
never completed.

**Write errors name their path.** A full, read-only or forbidden data directory raises
``ArtefactWriteError`` naming the file and the free space, instead of a bare
``[Errno 28]`` from deep inside numpy or torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

MANIFEST = ".manifest.json"
# Test hook (see ``pause_point``): `CHAMELEON_PAUSE_AT=<point>:<path substring>`.
PAUSE_ENV, PAUSE_MARKER_ENV, PAUSE_SECONDS_ENV = "CHAMELEON_PAUSE_AT", "CHAMELEON_PAUSE_MARKER", "CHAMELEON_PAUSE_SECONDS"
_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


class ArtefactWriteError(OSError):
    """An artefact could not be written (disk full, read-only or forbidden); names the path."""


def _write_error(exc: OSError, target: Path) -> OSError:
    """``exc`` re-raised as an ArtefactWriteError naming ``target``, when it is a disk/permission error."""
    if exc.errno not in _WRITE_ERRNOS or isinstance(exc, ArtefactWriteError):
        return exc
    where = Path(target)
    probe = next((p for p in [where, *where.parents] if p.exists()), Path("/"))
    try:
        free = f"{shutil.disk_usage(probe).free / 1e6:,.0f} MB free there"
    except OSError:
        free = "free space unknown"
    what = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system"}.get(exc.errno, "permission denied")
    return ArtefactWriteError(exc.errno, f"cannot write {target}: {what} ({free}); free space or point "
                                         "CHAMELEON_DATA_DIR at a writable disk, then run again")


@contextlib.contextmanager
def naming_write_errors(target: Path) -> Iterator[None]:
    """Turn a disk-full / read-only / permission OSError inside the block into one naming ``target``."""
    try:
        yield
    except OSError as exc:
        raise _write_error(exc, target) from exc


def pause_point(point: str, path: Path) -> None:
    """Test hook: stop here while ``$CHAMELEON_PAUSE_AT`` is ``<point>:<substring of path>``.

    It touches ``$CHAMELEON_PAUSE_MARKER`` (if set) and sleeps until killed (or for
    ``$CHAMELEON_PAUSE_SECONDS``), so a test can SIGKILL a writer between writing an
    artefact and committing it, or make a second writer meet the first. Points:
    ``commit`` (``atomic_dir``, files written, not yet renamed; path: the target) and
    ``step`` (``io.one_writer``, partition lock held; path: the lock file). Unset, it
    costs one environment lookup.
    """
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    want, _, needle = spec.partition(":")
    if want != point or needle not in str(path):
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        Path(marker).write_text(f"{os.getpid()} {point} {path}\n")
    seconds = os.environ.get(PAUSE_SECONDS_ENV)
    if seconds:
        time.sleep(float(seconds))
        return
    while True:
        time.sleep(3600)


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _host_id() -> str:
    """8 hex digits naming this machine and boot: a pid means something only there."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return hashlib.sha256(f"{os.uname().nodename}|{boot}".encode()).hexdigest()[:8]


HOST_ID = _host_id()


def _temp_prefix(name: str, kind: str) -> str:
    # The writer's host and pid are in the name, so leftovers of a killed writer can be
    # told apart from a live writer's, also one on another machine sharing the data
    # directory (``remove_leftovers`` only judges its own host's).
    return f".{name}.{kind}-{HOST_ID}-{os.getpid()}-"


@contextlib.contextmanager
def atomic_dir(target: Path, manifest: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes ``target`` on success.

    On success: the manifest is written (unless ``manifest=False``), every file and the
    directory are synced, and the directory is renamed to ``target`` (swapped with an
    existing ``target`` in one step), then the parent is synced. On an exception the
    temporary directory is removed and ``target`` is untouched.
    """
    target = Path(target)
    with naming_write_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target.name, "tmp"), dir=target.parent))
    try:
        with naming_write_errors(target):
            yield tmp
            if manifest:
                write_json(tmp / MANIFEST, manifest_of(tmp))
            for f in sorted(tmp.rglob("*"), reverse=True):  # files before the folders holding them
                fsync_path(f)
            fsync_path(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pause_point("commit", target)
    try:
        with naming_write_errors(target):
            if target.exists() and _exchange(tmp, target):
                shutil.rmtree(tmp, ignore_errors=True)  # now holds the old folder
            else:
                if target.exists():  # no atomic swap on this file system: the target is briefly absent
                    old = target.parent / f"{_temp_prefix(target.name, 'old')}{time.time_ns()}"
                    os.replace(target, old)
                    os.replace(tmp, target)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, target)
            fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    remove_leftovers(target.parent)


@contextlib.contextmanager
def atomic_file(target: Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file next to ``target``; on success sync it, rename it over
    ``target`` and sync the directory."""
    target = Path(target)
    with naming_write_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target.name, "tmp"), dir=target.parent)
        os.close(fd)
    try:
        with naming_write_errors(target):
            with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            fsync_path(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def manifest_of(folder: Path) -> dict:
    """``{"files": {relative path: {"bytes", "sha256"}}}`` of every file under ``folder`` but the manifest."""
    files = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != MANIFEST:
            files[str(f.relative_to(folder))] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
    return {"files": files}


def verify_dir(folder: Path, deep: bool = False) -> str | None:
    """What is wrong with an artefact folder written by ``atomic_dir``, or None if intact.

    Checks that the folder and its manifest exist and that every file listed has the
    recorded size (``deep``: also the recorded sha256).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is missing"
    try:
        manifest = read_json(folder / MANIFEST)
        files = manifest["files"]
    except FileNotFoundError:
        return f"{folder} has no {MANIFEST} (it was never completed)"
    except (ValueError, KeyError, TypeError):
        return f"{folder / MANIFEST} is damaged"
    for name, meta in files.items():
        f = folder / name
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            return f"{f} is missing"
        if size != meta["bytes"]:
            return f"{f} has {size:,} bytes, {meta['bytes']:,} were written"
        if deep and sha256_file(f) != meta["sha256"]:
            return f"{f} does not have the content that was written (sha256 differs)"
    return None


def remove_leftovers(parent: Path) -> list[Path]:
    """Delete temporary files and folders under ``parent`` left by writers that are gone."""
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        parts = p.name.split(".")
        fields = parts[-1].split("-") if p.name.startswith(".") and len(parts) >= 3 else []
        if len(fields) < 3 or fields[0] not in ("tmp", "old") or fields[1] != HOST_ID or not fields[2].isdigit():
            continue
        if pid_alive(int(fields[2])):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def pid_alive(pid: int) -> bool:
    """True while a process ``pid`` exists on this machine (also one we may not signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable(folder: Path) -> None:
    """Fail early, naming ``folder``, when files cannot be created and synced there."""
    folder = Path(folder)
    with naming_write_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / ".write-check") as fh:
        fh.write(f"{os.getpid()}\n")


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

    The folder ``current`` points to is always kept; temporary folders of writers that
    were killed are deleted too. Returns what was deleted.
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
    return doomed + remove_leftovers(parent)
