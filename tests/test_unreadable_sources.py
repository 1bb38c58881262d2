"""A source file that is not what its name says, for every reader: one line naming the
domain and the file, both in ``chameleon sync --dry-run`` and as the failed corpus step,
and the domain's corpus built before the damage is kept.

Each case writes a good source, builds its corpus, then damages one file the way files
are damaged in practice (another format under the name, a cut download, a stray line).
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import TOPICS, current, register

TEXTS = [f"{TOPICS['alpha']} Document number {i}. " + TOPICS["alpha"] * (1 + i % 3) for i in range(12)]


def _jsonl_bytes(texts: list[str] = TEXTS) -> bytes:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()


def _zstd(data: bytes) -> bytes:
    import pyarrow as pa

    return pa.Codec("zstd").compress(data, asbytes=True)


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@dataclass(frozen=True)
class Case:
    """How to write a good source under a folder, and how to damage it.

    ``write(folder) -> source`` writes the good source; ``damage(source) -> file`` damages it
    and returns the file the message must name; ``says`` is what the message says of it."""

    write: Callable[[Path], Path]
    damage: Callable[[Path], Path]
    says: str


def _write_txt(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, text in enumerate(TEXTS):
        (folder / f"doc-{i:02d}.txt").write_text(text, encoding="utf-8")
    return folder


def _latin1_txt(source: Path) -> Path:
    bad = source / "doc-05.txt"
    bad.write_bytes("Un café crème, s'il vous plaît.".encode("latin-1"))
    return bad


def _write(name: str, data: Callable[[], bytes]) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        folder.mkdir(parents=True)
        path = folder / name
        path.write_bytes(data())
        return path
    return write


def _replace(data: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    def damage(source: Path) -> Path:
        source.write_bytes(data(source.read_bytes()))
        return source
    return damage


def _cut_file(source: Path) -> Path:
    _cut(source)
    return source


def _write_hf(folder: Path) -> Path:
    import datasets

    datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(folder))
    return folder


def _hf_not_saved(source: Path) -> Path:
    (source / "state.json").unlink()
    return source


def _hf_cut_arrow(source: Path) -> Path:
    (arrow,) = source.glob("*.arrow")
    _cut(arrow)
    return arrow


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))

CASES = {
    "txt-not-utf8": Case(_write_txt, _latin1_txt, "not UTF-8 text"),
    "jsonl-binary": Case(_write("d.jsonl", _jsonl_bytes), _replace(lambda _: PNG), "line 1: not UTF-8 text"),
    "jsonl-invalid-line": Case(_write("d.jsonl", _jsonl_bytes), _replace(lambda b: b + b"{not json\n"),
                               "line 13: invalid JSON"),
    "jsonl-not-utf8": Case(_write("d.jsonl", _jsonl_bytes),
                           _replace(lambda b: b + '{"text": "café"}\n'.encode("latin-1")), "line 13: not UTF-8 text"),
    "gz-plain-jsonl": Case(_write("d.jsonl.gz", lambda: gzip.compress(_jsonl_bytes())),
                           _replace(lambda _: _jsonl_bytes()), "not a gzip file"),
    "gz-truncated": Case(_write("d.jsonl.gz", lambda: gzip.compress(_jsonl_bytes())), _cut_file,
                         "corrupt or truncated gzip data"),
    "zst-gzip-inside": Case(_write("d.jsonl.zst", lambda: _zstd(_jsonl_bytes())),
                            _replace(lambda _: gzip.compress(_jsonl_bytes())), "not a zstd file"),
    "zst-truncated": Case(_write("d.jsonl.zst", lambda: _zstd(_jsonl_bytes())), _cut_file,
                          "corrupt or truncated zstd data"),
    "parquet-jsonl-inside": Case(_write("d.parquet", lambda: _parquet_bytes()), _replace(lambda _: _jsonl_bytes()),
                                 "not a readable Parquet file"),
    "hf-not-a-saved-dataset": Case(_write_hf, _hf_not_saved, "not a dataset saved with save_to_disk"),
    "hf-truncated-arrow": Case(_write_hf, _hf_cut_arrow, "not a readable Arrow file"),
}


def _parquet_bytes() -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": TEXTS}), buffer)
    return buffer.getvalue()


def _step_errors(result) -> list[str]:  # noqa: ANN001 (a dg.ExecuteInProcessResult)
    """The one failed step's error and its causes, outermost first, as ``Class: message``."""
    (event,) = result.get_step_failure_events()
    error, chain = event.step_failure_data.error, []
    while error is not None:
        chain.append(error.message.strip())
        error = error.cause
    return chain


def _break(project: Path, case: Case) -> tuple[Path, Path, bytes]:
    """Write the case's good source as domain ``x``, build its corpus, damage the source;
    return the damaged file, the corpus folder built and its train.bin bytes."""
    from chameleon_assets.defs.corpus.assets import domain_corpus
    from chameleon_assets.runner import get_instance, load_defs, materialize

    source = case.write(project / "raw" / "x")
    (project / "conf" / "domains.yaml").write_text(f"domains:\n  - {{name: x, source: {source}}}\n")
    instance = get_instance()
    register(instance, ["x"])
    assert materialize(load_defs(), instance, [domain_corpus], partition_key="x").success
    built = current(project, "corpus", "x")
    return case.damage(source), built, (built / "train.bin").read_bytes()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_damaged_source_is_one_line_in_dry_run_and_in_the_corpus_step(
        project: Path, case: Case, capsys: pytest.CaptureFixture) -> None:
    from chameleon_assets.cli import main
    from chameleon_assets.defs.corpus.assets import domain_corpus
    from chameleon_assets.runner import get_instance, load_defs, materialize

    bad, built, shards = _break(project, case)
    capsys.readouterr()
    assert main(["sync", "--dry-run"]) == 1
    out, _ = capsys.readouterr()
    refused = [line.removeprefix("refused: ") for line in out.splitlines() if line.startswith("refused: ")]
    assert len(refused) == 1, out
    line = refused[0]
    assert line.startswith(f"domain 'x': {'folder' if bad.is_dir() else 'file'} {bad}") and case.says in line, line

    result = materialize(load_defs(), get_instance(), [domain_corpus], partition_key="x", raise_on_error=False)
    assert not result.success
    assert f"chameleon_assets.core.registry.RegistryError: {line}" in _step_errors(result)
    assert current(project, "corpus", "x") == built and (built / "train.bin").read_bytes() == shards


@pytest.mark.slow
def test_sync_reports_the_damaged_source_as_its_failed_corpus_step(project: Path) -> None:
    from chameleon_assets.runner import get_instance, sync

    bad, built, shards = _break(project, CASES["gz-truncated"])
    report = sync(instance=get_instance())
    assert list(report.failed) == ["domain_corpus[x]"], report.failed
    message = report.failed["domain_corpus[x]"]
    assert message.startswith(f"chameleon_assets.core.registry.RegistryError: domain 'x': file {bad}: corrupt or "
                              "truncated gzip data after line ")
    assert "\n" not in message
    assert "domain_corpus[x]" not in report.materialized
    assert current(project, "corpus", "x") == built and (built / "train.bin").read_bytes() == shards
