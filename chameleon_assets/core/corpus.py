"""Tokenise a domain's documents and pack them into flat on-disk token arrays.

``build_shards`` streams: the source's units (``core.documents``) are read, filtered and
tokenised by worker processes, one per core, each writing its documents' token ids to a
part file beside the shards and returning only their lengths; the parts are then packed
in the split's order. Memory holds a batch per worker and 16 bytes per document (token
count, text bytes, position), never the text, so a domain of any size fits. The shards
are byte-identical for any number of workers.

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

import contextlib
import hashlib
import itertools
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from chameleon_assets.core.artifacts import atomic_dir, read_json, write_json
from chameleon_assets.core.documents import Scan, Unit, check_matched, read_unit, units
from chameleon_assets.core.registry import DomainSpec, RegistryError

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedTokenizerFast

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


# --- Tokenising: units -> parts ------------------------------------------------------------

# A tokenising batch: texts are encoded this many at a time, or fewer when they hold
# ENCODE_BATCH_CHARS characters, so a worker holds about one batch of text and its ids
# (about 10 MB of Python integers for a million characters).
ENCODE_BATCH_DOCS = 256
ENCODE_BATCH_CHARS = 1_000_000
# Units handed to the workers ahead of the one being collected, per worker: enough to keep
# every core busy while results are joined in order, few enough to bound what waits.
IN_FLIGHT_PER_WORKER = 2
# Starting a worker costs about a second (it imports numpy, pyarrow and tokenizers): a
# source gets one worker per this many bytes on disk, up to the cores, so a small domain
# (each default one) is read in this process.
BYTES_PER_WORKER = 16_000_000
# Documents are packed into the shards through a buffer of this many tokens.
PACK_BUFFER_TOKENS = 1 << 20


def corpus_workers() -> int:
    """Processes that read and tokenise a domain: ``$CHAMELEON_CORPUS_WORKERS``, else the
    cores this process may use (``RAYON_NUM_THREADS``, which a parallel run's worker sets
    to its share of them, or the CPU affinity)."""
    for name in ("CHAMELEON_CORPUS_WORKERS", "RAYON_NUM_THREADS"):
        if os.environ.get(name, "").isdigit() and int(os.environ[name]) > 0:
            return int(os.environ[name])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class TokenisedUnit:
    """One unit's documents: token ids in ``part`` (a flat file, no separators), the token
    count and UTF-8 size of each document, what reading found, and its first text."""

    part: str
    tokens: "np.ndarray"  # uint32 per document
    text_bytes: "np.ndarray"  # uint64 per document
    scan: Scan
    preview: str = ""


def tokenise_unit(spec: DomainSpec, unit: Unit, part: Path, dtype: str, limit: int | None,
                  encode: Callable[[list[str]], list[list[int]]]) -> TokenisedUnit:
    """Read ``unit``'s non-empty documents (at most ``limit``), encode them batch by batch
    with ``encode`` and append their ids to ``part``."""
    import numpy as np

    scan, lengths, sizes, preview = Scan(), [], [], ""
    batch: list[str] = []
    chars = 0

    def flush(out) -> None:  # noqa: ANN001
        ids = encode(batch)
        counts = [len(x) for x in ids]
        out.write(np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=sum(counts)).tobytes())
        lengths.extend(counts)
        sizes.extend(len(t.encode("utf-8")) for t in batch)
        batch.clear()

    with open(part, "wb") as out:
        for text in read_unit(spec, unit, scan):
            if not text or text.isspace():
                continue
            preview = preview or text[:300]
            batch.append(text)
            chars += len(text)
            if len(batch) >= ENCODE_BATCH_DOCS or chars >= ENCODE_BATCH_CHARS:
                flush(out)
                chars = 0
            if limit is not None and len(lengths) + len(batch) >= limit:
                break
        if batch:
            flush(out)
    return TokenisedUnit(str(part), np.asarray(lengths, dtype=np.uint32), np.asarray(sizes, dtype=np.uint64), scan,
                         preview)


_WORKER_ENCODER = None


def _start_worker(tokenizer_json: str) -> None:
    """A worker's tokenizer: the main process's Rust tokenizer, rebuilt from its JSON (no
    transformers import), on one thread: the workers are the parallelism."""
    global _WORKER_ENCODER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _WORKER_ENCODER = Tokenizer.from_str(tokenizer_json)


def _encode_in_worker(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in _WORKER_ENCODER.encode_batch(texts, add_special_tokens=False)]


def _tokenise_in_worker(spec: DomainSpec, unit: Unit, part: str, dtype: str, limit: int | None) -> TokenisedUnit:
    return tokenise_unit(spec, unit, Path(part), dtype, limit, _encode_in_worker)


def plan_workers(todo: list[Unit], requested: int | None = None) -> int:
    """How many processes tokenise ``todo``: ``requested``, else one per ``BYTES_PER_WORKER``
    bytes of the units, at most ``corpus_workers()``; never more than there are units."""
    if requested is None:
        requested = min(corpus_workers(), -(-sum(u.size for u in todo) // BYTES_PER_WORKER))
    return max(1, min(requested, len(todo)))


def tokenise_units(spec: DomainSpec, tok: "PreTrainedTokenizerFast", parts: Path, dtype: str, workers: int,
                   todo: list[Unit] | None = None) -> Iterator[TokenisedUnit]:
    """Every unit of the source (``todo``, default all) tokenised, in unit order: in this
    process when ``workers`` is 1, else by ``workers`` spawned processes with at most
    ``IN_FLIGHT_PER_WORKER`` units each handed out ahead of the one awaited."""
    from chameleon_assets.core.tokenizer import encode_documents

    todo = units(spec) if todo is None else todo
    limit = spec.max_documents
    if workers <= 1 or len(todo) <= 1:
        for i, unit in enumerate(todo):
            yield tokenise_unit(spec, unit, parts / f"{i:06d}.bin", dtype, limit,
                                lambda texts: encode_documents(tok, texts))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Spawned, not forked: the caller may hold threads (Dagster, torch, the Rust pool).
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(tok.backend_tokenizer.to_str(),))
    pending: deque = deque()
    queue = iter(enumerate(todo))
    try:
        for i, unit in itertools.islice(queue, workers * IN_FLIGHT_PER_WORKER):
            pending.append(pool.submit(_tokenise_in_worker, spec, unit, str(parts / f"{i:06d}.bin"), dtype, limit))
        while pending:
            result = pending.popleft().result()
            for i, unit in itertools.islice(queue, 1):
                pending.append(pool.submit(_tokenise_in_worker, spec, unit, str(parts / f"{i:06d}.bin"), dtype, limit))
            yield result
    finally:
        # Also when the caller stops early (max_documents reached) or a unit failed.
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class DomainTokens:
    """A domain's documents as token ids in part files: document ``j`` is
    ``parts[part_of(j)][starts[j]:starts[j] + tokens[j]]``."""

    parts: list  # np.ndarray or np.memmap per unit
    first_doc: "np.ndarray"  # index of each part's first document
    tokens: "np.ndarray"
    text_bytes: "np.ndarray"
    starts: "np.ndarray"  # position in its part
    scan: Scan = field(default_factory=Scan)
    preview: str = ""
    units: int = 1  # units read (all of them unless max_documents stopped the reading)

    @property
    def documents(self) -> int:
        return int(self.tokens.size)

    @classmethod
    def in_memory(cls, texts: list[str], token_ids: list[list[int]], dtype: "np.dtype") -> "DomainTokens":
        """Documents already tokenised (one part held in memory)."""
        import numpy as np

        tokens = np.asarray([len(d) for d in token_ids], dtype=np.uint32)
        flat = np.fromiter(itertools.chain.from_iterable(token_ids), dtype=dtype, count=int(tokens.sum()))
        return cls([flat], np.zeros(1, dtype=np.int64), tokens,
                   np.asarray([len(t.encode("utf-8")) for t in texts], dtype=np.uint64), _starts([tokens]),
                   preview=texts[0][:300] if texts else "")

    @classmethod
    def join(cls, results: Iterator[TokenisedUnit], dtype: "np.dtype", limit: int | None) -> "DomainTokens":
        """The units' results in order, cut at ``limit`` documents."""
        import numpy as np

        parts, counts, lengths, sizes, scan, preview, total, read = [], [], [], [], Scan(), "", 0, 0
        for r in results:
            read += 1
            scan.add(r.scan)
            n = r.tokens.size if limit is None else min(r.tokens.size, limit - total)
            if n:
                parts.append(np.memmap(r.part, dtype=dtype, mode="r") if r.tokens[:n].sum() else np.empty(0, dtype))
                counts.append(n)
                lengths.append(r.tokens[:n])
                sizes.append(r.text_bytes[:n])
                preview = preview or r.preview
                total += n
            if limit is not None and total >= limit:
                break
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else np.zeros(0, np.int64)
        return cls(parts, first, np.concatenate(lengths) if lengths else np.zeros(0, np.uint32),
                   np.concatenate(sizes) if sizes else np.zeros(0, np.uint64), _starts(lengths), scan, preview, read)

    def pack(self, order: "np.ndarray", eos_id: int, dtype: "np.dtype", path: Path) -> int:
        """Write the documents in ``order``, each followed by ``eos_id``, to ``path``; return the tokens written."""
        import numpy as np

        part_of = np.searchsorted(self.first_doc, order, side="right") - 1
        buf = np.empty(PACK_BUFFER_TOKENS, dtype=dtype)
        pos = written = 0
        with open(path, "wb") as out:
            for j, p in zip(order.tolist(), part_of.tolist()):
                n, s = int(self.tokens[j]), int(self.starts[j])
                if pos + n + 1 > buf.size:
                    out.write(buf[:pos].tobytes())
                    written += pos
                    pos = 0
                    if n + 1 > buf.size:
                        buf = np.empty(n + 1, dtype=dtype)
                buf[pos:pos + n] = self.parts[p][s:s + n]
                buf[pos + n] = eos_id
                pos += n + 1
            out.write(buf[:pos].tobytes())
        return written + pos


def _starts(lengths: list) -> "np.ndarray":
    """Each document's position in its part: the running sum of the lengths before it, per part."""
    import numpy as np

    if not lengths:
        return np.zeros(0, dtype=np.uint64)
    return np.concatenate([np.concatenate([[0], np.cumsum(x, dtype=np.uint64)[:-1]]).astype(np.uint64)
                           if len(x) else np.zeros(0, np.uint64) for x in lengths])


@dataclass
class BuildReport:
    """How ``build_shards`` read its source: for the asset's metadata and the benchmark."""

    scan: Scan
    units: int
    workers: int
    seconds: float
    preview: str
    text_bytes: int  # UTF-8 bytes of the documents kept

    @property
    def mb_per_s(self) -> float:
        """Megabytes of document text read, filtered, tokenised and packed per second."""
        return self.text_bytes / 1e6 / max(self.seconds, 1e-9)

    @property
    def source_mb_per_s(self) -> float:
        """Megabytes of the source as stored (compressed, every record) covered per second."""
        return self.scan.bytes / 1e6 / max(self.seconds, 1e-9)


def build_shards(spec: DomainSpec, tok: "PreTrainedTokenizerFast", out_dir: Path, val_fraction: float, seed: int,
                 data_version: str, tokenizer_fingerprint: str = "", minimum: CorpusMinimum | None = None,
                 workers: int | None = None) -> tuple[CorpusShards, BuildReport]:
    """Read, filter, tokenise, split and pack ``spec``'s documents into ``out_dir`` atomically.

    ``workers`` processes (default ``plan_workers``: one per ``BYTES_PER_WORKER`` of
    source, at most one per core) tokenise the source's units; the result does not depend
    on how many. Refuses a filter matching no record and a domain below ``minimum`` before
    anything is written.
    """
    todo = units(spec)
    workers = plan_workers(todo, workers)
    dtype = token_dtype(len(tok))
    t0 = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        parts = tmp / ".parts"
        parts.mkdir()
        # closing(): stopping at max_documents shuts the workers down at once.
        with contextlib.closing(tokenise_units(spec, tok, parts, dtype.name, workers, todo)) as results:
            docs = DomainTokens.join(results, dtype, spec.max_documents)
        check_matched(spec, docs.scan)
        shards = _write(spec.name, docs, tok.eos_token_id, len(tok), tmp, out_dir, val_fraction, seed, data_version,
                        tokenizer_fingerprint, minimum)
        docs.parts.clear()  # release the memory maps before the parts go
        shutil.rmtree(parts)
    return shards, BuildReport(docs.scan, docs.units, workers, time.perf_counter() - t0, docs.preview,
                               shards.text_bytes + shards.val_text_bytes)


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
    """Split, pack and atomically write documents already tokenised; return their descriptor.

    With ``minimum``, a domain below it is refused (``CorpusTooSmall``) before anything is
    written; without, only a domain with no documents at all is.
    """
    docs = DomainTokens.in_memory(texts, token_ids, token_dtype(vocab_size))
    with atomic_dir(out_dir) as tmp:
        return _write(domain, docs, eos_id, vocab_size, tmp, out_dir, val_fraction, seed, data_version,
                      tokenizer_fingerprint, minimum)


def _write(domain: str, docs: DomainTokens, eos_id: int, vocab_size: int, tmp: Path, out_dir: Path,
           val_fraction: float, seed: int, data_version: str, tokenizer_fingerprint: str,
           minimum: CorpusMinimum | None) -> CorpusShards:
    """The split (by document, seeded by project seed and domain), the minimum check and
    the packing into ``tmp``, which becomes ``out_dir``."""
    train_idx, val_idx = split_documents(docs.documents, val_fraction, domain_seed(seed, domain))
    train_tokens = int(docs.tokens[train_idx].sum(dtype="int64")) + int(train_idx.size)
    (minimum or CorpusMinimum(train_tokens=1, documents=1)).check(domain, docs.documents, train_tokens)
    dtype = token_dtype(vocab_size)
    shards = CorpusShards(
        domain=domain,
        directory=str(out_dir),
        dtype=dtype.name,
        vocab_size=vocab_size,
        train_tokens=docs.pack(train_idx, eos_id, dtype, tmp / "train.bin"),
        val_tokens=docs.pack(val_idx, eos_id, dtype, tmp / "val.bin"),
        train_documents=int(train_idx.size),
        val_documents=int(val_idx.size),
        text_bytes=int(docs.text_bytes[train_idx].sum(dtype="uint64")),
        val_text_bytes=int(docs.text_bytes[val_idx].sum(dtype="uint64")),
        data_version=data_version,
        tokenizer_fingerprint=tokenizer_fingerprint,
    )
    write_json(tmp / "meta.json", shards.__dict__)
    return shards
