"""Tokenising and packing: exact counts, the separator, a seeded by-document split."""

import os
from pathlib import Path

import numpy as np
import pytest

from chameleon_assets.core.corpus import CorpusShards, domain_seed, split_documents, token_dtype, write_shards
from chameleon_assets.core.tokenizer import encode_documents, load_tokenizer


def test_packing_puts_one_separator_after_every_document(tmp_path: Path) -> None:
    tok = load_tokenizer("bpe-8k")
    texts = ["alpha beta gamma", "one two", "a longer third document about rivers", "x"]
    ids = encode_documents(tok, texts)
    shards = write_shards("d", texts, ids, tok.eos_token_id, len(tok), tmp_path / "d", 0.25, 0, "v1")
    train, val = np.asarray(shards.train()), np.asarray(shards.val())
    # Exact counts: every document's tokens plus one <|endoftext|> each.
    assert train.size + val.size == sum(len(i) for i in ids) + len(texts)
    assert (shards.train_documents, shards.val_documents) == (3, 1)
    assert int((train == tok.eos_token_id).sum()) == 3 and int((val == tok.eos_token_id).sum()) == 1
    assert train[-1] == tok.eos_token_id and val[-1] == tok.eos_token_id
    # Every segment between separators decodes back to exactly one whole document.
    segments = np.split(train, np.flatnonzero(train == tok.eos_token_id) + 1)[:-1]
    decoded = sorted(tok.decode(seg[:-1].tolist()) for seg in segments)
    _, val_idx = split_documents(4, 0.25, domain_seed(0, "d"))
    assert decoded == sorted(t for i, t in enumerate(texts) if i not in set(val_idx.tolist()))
    assert tok.decode(val[:-1].tolist()) == texts[int(val_idx[0])]
    assert CorpusShards.load(tmp_path / "d") == shards


def test_split_is_by_document_seeded_and_disjoint() -> None:
    tr1, va1 = split_documents(100, 0.05, seed=7)
    tr2, va2 = split_documents(100, 0.05, seed=7)
    tr3, va3 = split_documents(100, 0.05, seed=8)
    assert np.array_equal(va1, va2) and np.array_equal(tr1, tr2)
    assert not np.array_equal(va1, va3)
    assert va1.size == 5 and tr1.size == 95
    assert set(tr1.tolist()).isdisjoint(va1.tolist()) and set(tr1.tolist()) | set(va1.tolist()) == set(range(100))


def test_split_keeps_one_document_on_each_side_and_rejects_bad_fraction() -> None:
    assert [a.size for a in split_documents(3, 0.01, 0)] == [2, 1]
    assert [a.size for a in split_documents(1, 0.5, 0)] == [1, 0]
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(10, 1.0, 0)


def test_domain_seed_depends_only_on_seed_and_name() -> None:
    assert domain_seed(0, "wiki") == domain_seed(0, "wiki")
    assert domain_seed(0, "wiki") != domain_seed(0, "code") != domain_seed(1, "code")


def test_dtype_is_uint16_when_vocabulary_fits() -> None:
    assert token_dtype(50257) == np.uint16 and token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_gpt2_tokenizer_is_the_real_bpe() -> None:
    tok = load_tokenizer("gpt2")
    assert len(tok) == 50257 and tok.eos_token_id == 50256
    # Reference ids of GPT-2's BPE for this string.
    assert encode_documents(tok, ["Hello world"])[0] == [15496, 995]


def test_a_one_document_domain_has_an_empty_but_readable_validation_split(tmp_path: Path) -> None:
    tok = load_tokenizer("bpe-8k")
    shards = write_shards("solo", ["just one"], encode_documents(tok, ["just one"]), tok.eos_token_id, len(tok),
                          tmp_path / "solo", 0.05, 0, "v")
    assert shards.val_tokens == 0 and shards.val().size == 0
    assert shards.train().size == shards.train_tokens > 0


def test_documents_encode_the_same_on_every_core_and_the_environment_is_put_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """encode_documents turns the Rust thread pool on for its batch only: the ids equal a
    one-thread encoding document by document, and TOKENIZERS_PARALLELISM is as before."""
    tok = load_tokenizer("bpe-8k")
    texts = [f"Document {i}: " + "the quick brown fox jumps over the lazy dog. " * (i % 7 + 1) for i in range(300)]
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    one_by_one = [tok.backend_tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    assert encode_documents(tok, texts) == one_by_one
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    assert encode_documents(tok, texts[:3]) == one_by_one[:3]
    assert "TOKENIZERS_PARALLELISM" not in os.environ
