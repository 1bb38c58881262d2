"""Tokenise a domain's documents and pack them into flat on-disk token arrays.

Layout of one domain's shard folder::

    train.bin   token ids of the training documents, each followed by <|endoftext|>
    val.bin     the same for the held-out documents
    meta.json   dtype, token/document counts, the split and the data version

The split is by document (never inside one), drawn with a generator seeded by the
project seed and the domain's name, so it does not depend on which other domains exist.

A domain below the stated minimum (see ``CorpusMinimum``) is refused, not admitted with a
warning: at least ``MIN_DOCUMENTS`` (2) non-empty documents, and at least
``embedding.sample_length + 1`` training tokens (separators included).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chameleon_assets.core.artifacts import atomic_dir, read_json, write_json
from chameleon_assets.core.registry import RegistryError

if TYPE_CHECKING:
    import numpy as np

    from chameleon_assets.core.config import EmbeddingConfig

# The stated minimum a domain must meet (enforced by ``CorpusMinimum.check``):
# 2 documents, so the by-document split can hold one out for validation.
MIN_DOCUMENTS = 2

# numpy is imported inside the functions: the asset modules import CorpusShards when the
# code location loads, and loading it should cost no more than importing dagster.


def domain_seed(seed: int, domain: str) -> int:
    """A 32-bit seed derived from the project seed and a domain name (stable across runs)."""
    return int(hashlib.sha256(f"{seed}:{domain}".encode()).hexdigest()[:8], 16)


def token_dtype(vocab_size: int) -> "np.dtype":
    """uint16 when every id fits (vocab <= 65,536), else uint32."""
    import numpy as np

    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def split_documents(n_docs: int, val_fraction: float, seed: int) -> "tuple[np.ndarray, np.ndarray]":
    """Shuffle document indices with ``seed`` and cut off ``round(val_fraction * n)`` for validation.

    At least one document goes to each side when there are two or more documents and
    ``val_fraction > 0``. Returns (train indices, val indices), each in shuffled order.
    """
    import numpy as np

    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n_docs)
    n_val = int(round(val_fraction * n_docs))
    if val_fraction > 0 and n_docs >= 2:
        n_val = min(max(n_val, 1), n_docs - 1)
    return perm[n_val:], perm[:n_val]


def pack(docs: list[list[int]], order: "np.ndarray", eos_id: int, dtype: "np.dtype") -> "np.ndarray":
    """Concatenate the documents in ``order``, each followed by ``eos_id``."""
    import numpy as np

    total = sum(len(docs[i]) + 1 for i in order)
    out = np.empty(total, dtype=dtype)
    pos = 0
    for i in order:
        d = docs[i]
        out[pos : pos + len(d)] = d
        out[pos + len(d)] = eos_id
        pos += len(d) + 1
    return out


@dataclass(frozen=True)
class CorpusShards:
    """A domain's packed token arrays on disk (what ``domain_corpus`` hands downstream)."""

    domain: str
    directory: str
    dtype: str
    vocab_size: int
    train_tokens: int
    val_tokens: int
    train_documents: int
    val_documents: int
    text_bytes: int
    val_text_bytes: int
    data_version: str
    tokenizer_fingerprint: str = ""

    def train(self) -> "np.ndarray":
        """The training tokens, memory-mapped read-only."""
        return self._map("train.bin", self.train_tokens)

    def val(self) -> "np.ndarray":
        """The validation tokens, memory-mapped read-only (empty for a one-document domain)."""
        return self._map("val.bin", self.val_tokens)

    def _map(self, name: str, count: int) -> "np.ndarray":
        import numpy as np

        if count == 0:  # numpy cannot memory-map an empty file
            return np.empty(0, dtype=self.dtype)
        return np.memmap(Path(self.directory) / name, dtype=self.dtype, mode="r", shape=(count,))

    def require_tokenizer(self, fingerprint: str, name: str) -> None:
        """Refuse token ids made by another tokenizer than the one about to read them."""
        if self.tokenizer_fingerprint != fingerprint:
            raise ValueError(
                f"domain '{self.domain}': its shards ({self.data_version}) were tokenised with tokenizer "
                f"{self.tokenizer_fingerprint or 'unknown'}, not '{name}' ({fingerprint}); "
                "run `chameleon run` so domain_corpus is rebuilt first"
            )

    @classmethod
    def load(cls, directory: Path) -> "CorpusShards":
        return cls(**read_json(Path(directory) / "meta.json"))


class CorpusTooSmall(RegistryError):
    """A domain holds fewer documents or training tokens than ``CorpusMinimum`` requires."""


@dataclass(frozen=True)
class CorpusMinimum:
    """What a domain must hold to be used; below it ``domain_corpus`` refuses the domain.

    * ``documents`` (``MIN_DOCUMENTS`` = 2) non-empty documents, so that with
      ``val_fraction > 0`` the by-document split puts one in validation and one in training;
    * ``train_tokens`` (``embedding.sample_length + 1``) training tokens, the
      ``<|endoftext|>`` after each document included, so the training split fills at least
      one full embedding window (with fewer, every "sample" would be the whole domain).

    A document that is empty or whitespace only does not count (``iter_documents`` skips
    it), so an empty source and a whitespace-only one are refused alike.
    """

    train_tokens: int
    documents: int = MIN_DOCUMENTS
    source: str = ""
    registry: str = "conf/domains.yaml"

    @classmethod
    def for_embedding(cls, embedding: "EmbeddingConfig", source: object = "",
                      registry: object = "conf/domains.yaml") -> "CorpusMinimum":
        """The minimum under an embedding config: ``sample_length + 1`` training tokens."""
        return cls(train_tokens=embedding.sample_length + 1, source=str(source), registry=str(registry))

    def check(self, domain: str, documents: int, train_tokens: int = 0) -> None:
        """Raise ``CorpusTooSmall`` naming the domain, its source, what it has and what it needs.

        With ``train_tokens=0`` in the minimum only documents are checked (before tokenising).
        """
        if documents >= self.documents and train_tokens >= self.train_tokens:
            return
        where = f"domain '{domain}': {self.source}: " if self.source else f"domain '{domain}': "
        if documents == 0:
            has = "no non-empty documents (the source is empty, or every document is empty or whitespace only)"
        else:
            has = f"{documents} non-empty document{'s' if documents != 1 else ''} with {train_tokens} training tokens"
        needs = f"{self.documents} documents" + (
            f" and {self.train_tokens} training tokens (embedding.sample_length + 1)" if self.train_tokens else "")
        raise CorpusTooSmall(
            f"{where}{has}; a domain needs at least {needs} — add text or remove the domain from {self.registry}"
        )


def write_shards(
    domain: str,
    texts: list[str],
    token_ids: list[list[int]],
    eos_id: int,
    vocab_size: int,
    out_dir: Path,
    val_fraction: float,
    seed: int,
    data_version: str,
    tokenizer_fingerprint: str = "",
    minimum: CorpusMinimum | None = None,
) -> CorpusShards:
    """Split, pack and atomically write one domain's shards; return their descriptor.

    With ``minimum``, a domain below it is refused (``CorpusTooSmall``) before anything is
    written; without, only a domain with no documents at all is.
    """
    train_idx, val_idx = split_documents(len(texts), val_fraction, domain_seed(seed, domain))
    train_tokens = sum(len(token_ids[i]) + 1 for i in train_idx)
    (minimum or CorpusMinimum(train_tokens=1, documents=1)).check(domain, len(texts), train_tokens)
    dtype = token_dtype(vocab_size)
    train = pack(token_ids, train_idx, eos_id, dtype)
    val = pack(token_ids, val_idx, eos_id, dtype)
    with atomic_dir(out_dir) as tmp:
        train.tofile(tmp / "train.bin")
        val.tofile(tmp / "val.bin")
        shards = CorpusShards(
            domain=domain,
            directory=str(out_dir),
            dtype=dtype.name,
            vocab_size=vocab_size,
            train_tokens=int(train.size),
            val_tokens=int(val.size),
            train_documents=int(train_idx.size),
            val_documents=int(val_idx.size),
            text_bytes=sum(len(texts[i].encode("utf-8")) for i in train_idx),
            val_text_bytes=sum(len(texts[i].encode("utf-8")) for i in val_idx),
            data_version=data_version,
            tokenizer_fingerprint=tokenizer_fingerprint,
        )
        write_json(tmp / "meta.json", shards.__dict__)
    return shards
