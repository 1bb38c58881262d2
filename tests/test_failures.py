"""Failure behaviour without training: one-line CLI errors, write errors naming their path,
durable atomic folders and their manifests, locks. (Pipeline-level faults: test_faults.py.)"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from chameleon_assets.core import artifacts
from chameleon_assets.core.artifacts import ArtefactWriteError, atomic_dir, atomic_file, verify_dir
from chameleon_assets.core.locks import LockBusy, file_lock
from tests.conftest import write_domain, write_registry


# --- Errors a person can read -----------------------------------------------------------

def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    from chameleon_assets.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_missing_source_is_one_line_and_the_trace_goes_to_the_log(project: Path, capsys) -> None:  # noqa: ANN001
    write_registry(project, ["ghost"])  # raw/ghost/documents.jsonl was never written
    for argv in (["sync", "--dry-run"], ["sync"], ["run"]):
        rc, _, err = _cli(capsys, *argv)
        assert rc != 0, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("error: ") and "domain 'ghost'" in lines[0] and "does not exist" in lines[0]
        assert "Traceback" not in err
    log = project / "data" / "logs" / "chameleon.log"
    assert "Traceback" in log.read_text() and "RegistryError" in log.read_text()
    assert str(log) in lines[0]
    rc, _, err = _cli(capsys, "sync", "--dry-run", "--verbose")
    assert rc != 0 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_a_bad_profile_value_is_one_line_naming_file_and_field(project: Path, capsys) -> None:  # noqa: ANN001
    write_domain(project / "raw", "alpha")
    write_registry(project, ["alpha"])
    profile = project / "conf" / "profiles" / "tiny.yaml"
    profile.write_text(profile.read_text().replace("lr: 1.0e-2", "lr: 0", 1))
    rc, _, err = _cli(capsys, "sync")
    assert rc != 0
    assert err.strip().splitlines() == [err.strip()]
    assert str(profile) in err and "proxy.train.lr" in err and "greater than 0" in err


def test_dry_run_reads_the_sources_it_would_sync(project: Path, capsys) -> None:  # noqa: ANN001
    write_domain(project / "raw", "alpha")
    blank = project / "raw" / "blank" / "documents.jsonl"
    blank.parent.mkdir(parents=True)
    blank.write_text("\n".join(json.dumps({"text": " \n\t "}) for _ in range(5)) + "\n")
    bad = project / "raw" / "broken" / "documents.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"text": "fine"}) + "\n{not json\n")
    write_registry(project, ["alpha", "blank", "broken"])
    rc, out, err = _cli(capsys, "sync", "--dry-run")
    assert rc == 1
    assert "domain 'blank'" in out and "whitespace" in out
    assert "domain 'broken'" in out and "line 2" in out and "invalid JSON" in out
    assert "domain 'alpha'" not in out
    assert "input(s) refused" in err
    assert not (project / "data" / "artifacts" / "corpus").exists()  # a dry run writes nothing


# --- Full or read-only disks ------------------------------------------------------------

def test_a_full_disk_names_the_artefact_being_written(tmp_path: Path) -> None:
    target = tmp_path / "embeddings" / "alpha" / "v1"
    with pytest.raises(ArtefactWriteError) as info:
        with atomic_dir(target) as tmp:
            (tmp / "part.npy").write_bytes(b"x")
            with open("/dev/full", "w") as fh:  # the kernel's own ENOSPC
                fh.write("y" * 10)
                fh.flush()
    assert info.value.errno == errno.ENOSPC
    assert str(target) in str(info.value) and "no space left" in str(info.value) and "MB free" in str(info.value)
    assert not target.exists() and list(target.parent.iterdir()) == []  # nothing half-written left


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_a_read_only_data_directory_is_refused_before_anything_runs(
    project: Path, capsys, monkeypatch: pytest.MonkeyPatch, code: int, words: str  # noqa: ANN001
) -> None:
    write_domain(project / "raw", "alpha")
    write_registry(project, ["alpha"])

    def refuse(path) -> None:  # noqa: ANN001
        raise OSError(code, os.strerror(code))

    # Root ignores permission bits, so the kernel's refusal is injected where files are synced.
    monkeypatch.setattr(artifacts, "fsync_path", refuse)
    rc, _, err = _cli(capsys, "sync")
    assert rc == 2
    assert err.count("\n") == 1 and words in err and str(project / "data") in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permission bits; "
                    "the injected-error test above covers this case when run as root")
def test_a_read_only_data_directory_really_is_refused(project: Path, capsys) -> None:  # noqa: ANN001
    data = project / "data"
    data.mkdir()
    data.chmod(0o555)
    try:
        with pytest.raises(ArtefactWriteError, match="permission denied"):
            artifacts.check_writable(data)
    finally:
        data.chmod(0o755)


# --- Atomic, durable, checked folders ---------------------------------------------------

def test_a_folder_is_checked_against_its_manifest(tmp_path: Path) -> None:
    target = tmp_path / "v1"
    with atomic_dir(target) as tmp:
        (tmp / "train.bin").write_bytes(b"\x01" * 100)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "meta.json").write_text("{}")
    assert verify_dir(target) is None and verify_dir(target, deep=True) is None
    (target / "train.bin").write_bytes(b"\x01" * 60)
    assert "60 bytes, 100 were written" in verify_dir(target)
    (target / "train.bin").write_bytes(b"\x02" * 100)  # same size, other bytes
    assert verify_dir(target) is None and "sha256" in verify_dir(target, deep=True)
    (target / "sub" / "meta.json").unlink()
    assert "meta.json is missing" in verify_dir(target)
    (target / artifacts.MANIFEST).unlink()
    assert "never completed" in verify_dir(target)
    assert "is missing" in verify_dir(tmp_path / "nope")


def test_replacing_a_folder_never_leaves_the_path_missing(tmp_path: Path) -> None:
    target = tmp_path / "raw" / "alpha"
    with atomic_dir(target) as tmp:
        (tmp / "documents.jsonl").write_text("old\n")
    seen_missing = []
    original = os.replace

    def watch(a, b):  # noqa: ANN001, ANN202
        seen_missing.append(not Path(b).exists() if Path(a).is_dir() else False)
        return original(a, b)

    os_replace = pytest.MonkeyPatch()
    os_replace.setattr(artifacts.os, "replace", watch)
    try:
        with atomic_dir(target) as tmp:
            (tmp / "documents.jsonl").write_text("new\n")
    finally:
        os_replace.undo()
    assert (target / "documents.jsonl").read_text() == "new\n"
    assert verify_dir(target, deep=True) is None
    assert not any(seen_missing)  # swapped in one renameat2 call, no remove-then-rename
    assert [p.name for p in target.parent.iterdir()] == ["alpha"]


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "weights.json"
    target.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as fh:
            fh.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["weights.json"]


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = artifacts.HOST_ID
    dead = [f".v2.tmp-{host}-{dead_pid}-abc", f".weights.json.tmp-{host}-{dead_pid}-xyz"]
    kept = [f".v3.tmp-{host}-{os.getpid()}-abc",  # a live writer
            f".v4.tmp-0badc0de-{dead_pid}-abc",     # another machine's writer: its pid means nothing here
            "v1", ".values"]
    (tmp_path / dead[0]).mkdir()
    (tmp_path / dead[1]).write_text("half")
    for name in kept:
        (tmp_path / name).mkdir()
    removed = artifacts.remove_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == sorted(dead)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


# --- Locks ------------------------------------------------------------------------------

def test_a_held_lock_names_its_holder_and_is_released_when_the_holder_dies(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from chameleon_assets.core.locks import file_lock\n"
        f"with file_lock({str(lock)!r}, 'chameleon run'):\n"
        "    print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy, match=f"pid {holder.pid}: chameleon run"):
            with file_lock(lock, "second", wait=False):
                pass
    finally:
        holder.kill()
        holder.wait()
    t0 = time.monotonic()
    with file_lock(lock, "second", wait=False):
        assert "second" in lock.read_text()
    assert time.monotonic() - t0 < 5


@dataclass
class _Legacy:
    """A stored descriptor as the IO manager keeps one: a data version and its folder."""

    data_version: str
    path: str


def test_folders_from_before_manifests_are_adopted_once(project: Path) -> None:
    import pickle

    from chameleon_assets.defs import io

    folder = project / "data" / "artifacts" / "weights" / "v1"
    folder.mkdir(parents=True)
    (folder / "weights.json").write_text("{}")
    target = io.value_path(io.dg.AssetKey("mixture_weights"), None, "v1")
    target.parent.mkdir(parents=True)
    target.write_bytes(pickle.dumps(_Legacy("v1", str(folder))))
    assert "never completed" in io.damage(io.dg.AssetKey("mixture_weights"), None, "v1")
    assert io.adopt_legacy_artefacts() == [folder]
    assert io.damage(io.dg.AssetKey("mixture_weights"), None, "v1") is None
    (folder / artifacts.MANIFEST).unlink()
    assert io.adopt_legacy_artefacts() == []  # once only: from now on a missing manifest means damage
    assert "never completed" in io.damage(io.dg.AssetKey("mixture_weights"), None, "v1")
