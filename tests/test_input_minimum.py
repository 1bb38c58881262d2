"""Inputs too small to use are refused alike: empty, whitespace-only, or below the minimum.

The stated minimum (``chameleon_assets.core.corpus.CorpusMinimum``): at least 2 non-empty
documents and at least ``embedding.sample_length + 1`` training tokens.
"""

import json
from pathlib import Path

import pytest

from chameleon_assets.core.config import EmbeddingConfig
from chameleon_assets.core.corpus import MIN_DOCUMENTS, CorpusMinimum, CorpusTooSmall, write_shards
from chameleon_assets.core.registry import RegistryError, iter_documents, parse_registry
from chameleon_assets.core.tokenizer import encode_documents, load_tokenizer
from tests.conftest import register, write_domain, write_registry

TINY = "A domain of 23 bytes..."  # one document: cannot fill a window nor give a validation split
WHITESPACE = ["   ", "\n\n", "\t \r\n", "\u00a0\u2003"]  # the last: no-break and em spaces


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def _txt_dir(path: Path, texts: list[str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(texts):
        (path / f"{i:03d}.txt").write_text(t, encoding="utf-8")
    return path


def _spec(source: Path, name: str = "d"):
    (spec,) = parse_registry({"domains": [{"name": name, "source": str(source)}]})
    return spec


def _shards(tmp_path: Path, texts: list[str], minimum: CorpusMinimum | None):
    tok = load_tokenizer("bpe-8k")
    return write_shards("d", texts, encode_documents(tok, texts), tok.eos_token_id, len(tok), tmp_path / "out",
                        0.2, 0, "v", minimum=minimum)


@pytest.mark.parametrize("layout", ["jsonl", "txt"])
def test_whitespace_only_documents_are_skipped_like_empty_ones(tmp_path: Path, layout: str) -> None:
    make = _jsonl if layout == "jsonl" else _txt_dir
    target = tmp_path / ("d.jsonl" if layout == "jsonl" else "d")
    spec = _spec(make(target, ["", *WHITESPACE, "  real text  ", "\n", "more"]))
    # Non-empty documents come back unchanged (their own whitespace kept).
    assert list(iter_documents(spec)) == ["  real text  ", "more"]


def test_max_documents_counts_only_non_empty_documents(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "d.jsonl", [" ", "a", "\n", "b", "c"])
    (spec,) = parse_registry({"domains": [{"name": "d", "source": str(src), "max_documents": 2}]})
    assert list(iter_documents(spec)) == ["a", "b"]


@pytest.mark.parametrize("layout", ["jsonl", "txt"])
@pytest.mark.parametrize("content", ["empty", "whitespace"])
def test_empty_and_whitespace_only_sources_are_refused_alike(tmp_path: Path, layout: str, content: str) -> None:
    texts = [""] if content == "empty" else WHITESPACE
    if layout == "jsonl":
        src = tmp_path / "d.jsonl"
        if content == "empty":
            src.write_text("")  # a zero-byte file
        else:
            _jsonl(src, texts)
    else:
        src = _txt_dir(tmp_path / "d", texts)
    docs = list(iter_documents(_spec(src)))
    assert docs == []
    minimum = CorpusMinimum.for_embedding(_embedding(16), src)
    with pytest.raises(CorpusTooSmall) as exc:
        _shards(tmp_path, docs, minimum)
    msg = str(exc.value)
    assert msg.startswith(f"domain 'd': {src}: no non-empty documents")
    assert "empty or whitespace only" in msg
    assert "at least 2 documents and 17 training tokens" in msg
    # Without a minimum, an empty domain is still refused, with the same wording.
    with pytest.raises(RegistryError, match="no non-empty documents .*whitespace only"):
        _shards(tmp_path, docs, None)
    assert not (tmp_path / "out").exists()


def _embedding(sample_length: int) -> EmbeddingConfig:
    return EmbeddingConfig(sample_length=sample_length)


def test_the_minimum_is_two_documents_and_one_embedding_window_plus_one() -> None:
    m = CorpusMinimum.for_embedding(_embedding(16), "/src/d.jsonl", "conf/domains.yaml")
    assert (m.documents, m.train_tokens) == (MIN_DOCUMENTS, 17) == (2, 17)
    m.check("d", 2, 17)  # exactly at the minimum: accepted
    m.check("d", 500, 10_000)
    with pytest.raises(CorpusTooSmall, match=r"^domain 'd': /src/d.jsonl: 2 non-empty documents with 16 training"):
        m.check("d", 2, 16)
    with pytest.raises(CorpusTooSmall, match=r"1 non-empty document with 400 training tokens; a domain needs"):
        m.check("d", 1, 400)


def test_one_short_document_is_refused_with_what_it_has_and_needs(tmp_path: Path) -> None:
    text = TINY
    assert len(text.encode()) == 23
    tok = load_tokenizer("bpe-8k")
    n_tokens = len(encode_documents(tok, [text])[0]) + 1
    minimum = CorpusMinimum.for_embedding(_embedding(16), tmp_path / "tiny.jsonl", "conf/domains.yaml")
    with pytest.raises(CorpusTooSmall) as exc:
        _shards(tmp_path, [text], minimum)
    assert str(exc.value) == (
        f"domain 'd': {tmp_path / 'tiny.jsonl'}: 1 non-empty document with {n_tokens} training tokens; a domain "
        "needs at least 2 documents and 17 training tokens (embedding.sample_length + 1) — add text or remove "
        "the domain from conf/domains.yaml"
    )
    assert not (tmp_path / "out").exists()


def test_enough_documents_but_too_few_training_tokens_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusTooSmall, match="2 non-empty documents with .* training tokens; a domain needs"):
        _shards(tmp_path, ["short one", "short two"], CorpusMinimum.for_embedding(_embedding(16)))
    # The same documents with a smaller window are fine.
    shards = _shards(tmp_path, ["short one", "short two"], CorpusMinimum.for_embedding(_embedding(2)))
    assert (shards.train_documents, shards.val_documents) == (1, 1)


def _failure_text(result) -> str:
    """Every message (and cause) of the run's step failures, joined."""
    parts = []
    for event in result.get_step_failure_events():
        err = event.event_specific_data.error
        while err is not None:
            parts.append(err.message)
            err = err.cause
    return "\n".join(parts)


def test_domain_corpus_refuses_whitespace_only_and_tiny_domains(project: Path) -> None:
    from chameleon_assets.defs.corpus.assets import domain_corpus
    from chameleon_assets.runner import get_instance, load_defs, materialize

    raw = project / "raw"
    write_domain(raw, "alpha")  # a fixture domain (12 documents): still accepted
    _jsonl(raw / "blank" / "documents.jsonl", WHITESPACE * 3)
    _jsonl(raw / "tiny" / "documents.jsonl", [TINY])
    write_registry(project, ["alpha", "blank", "tiny"])
    instance = get_instance()
    defs = load_defs()
    register(instance, ["alpha", "blank", "tiny"])

    assert materialize(defs, instance, [domain_corpus], partition_key="alpha").success

    blank = materialize(defs, instance, [domain_corpus], partition_key="blank", raise_on_error=False)
    assert not blank.success
    text = _failure_text(blank)
    assert f"domain 'blank': {raw / 'blank' / 'documents.jsonl'}: no non-empty documents" in text
    assert "whitespace only" in text and "at least 2 documents and 17 training tokens" in text
    assert str(project / "conf" / "domains.yaml") in text

    small = materialize(defs, instance, [domain_corpus], partition_key="tiny", raise_on_error=False)
    assert not small.success
    text = _failure_text(small)
    assert f"domain 'tiny': {raw / 'tiny' / 'documents.jsonl'}: 1 non-empty document with " in text
    assert "a domain needs at least 2 documents and 17 training tokens (embedding.sample_length + 1)" in text
    # Nothing was written for the refused domains.
    for d in ("blank", "tiny"):
        assert not (project / "data" / "artifacts" / "corpus" / d / "current").exists()
