"""Content fingerprints of files, re-reading bytes only when a file's size or mtime changed.

Observing the raw domain sources (every sensor tick, every ``chameleon run``) must not
re-hash gigabytes each time. ``FingerprintCache`` keeps, per file, the (size, mtime_ns)
it last saw and the sha256 of the bytes it read then; a file whose size and mtime are
unchanged is trusted to have unchanged bytes (the same rule ``make`` and ``rsync`` use).
The files that must be read (new or changed) are hashed on every core at once: a sharded
dataset of many large files costs its bytes over the disk's and the cores' speed, once.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from chameleon_assets.core.artifacts import sha256_file, write_json


class FingerprintCache:
    """A JSON file mapping absolute path -> [size, mtime_ns, sha256]; ``None`` path: no persistence."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                self.entries = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.entries = {}  # a damaged cache only costs a re-hash

    def sha256(self, file: Path) -> str:
        """sha256 of ``file``'s bytes, from the cache when its size and mtime are unchanged."""
        return self.sha256_many([file])[0]

    def sha256_many(self, files: list[Path]) -> list[str]:
        """``sha256`` of each file; the ones not in the cache are read in parallel threads
        (hashlib releases the GIL while it hashes), one per core."""
        stats = [os.stat(f) for f in files]
        keys = [str(Path(f).resolve()) for f in files]
        stale = [i for i, (key, st) in enumerate(zip(keys, stats))
                 if not (hit := self.entries.get(key)) or hit[0] != st.st_size or hit[1] != st.st_mtime_ns]
        if stale:
            workers = min(len(stale), os.cpu_count() or 1)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                digests = list(pool.map(lambda i: sha256_file(files[i]), stale))
            for i, digest in zip(stale, digests):
                self.entries[keys[i]] = [stats[i].st_size, stats[i].st_mtime_ns, digest]
            self.dirty = True
        return [self.entries[key][2] for key in keys]

    def save(self) -> None:
        if self.path is not None and self.dirty:
            write_json(self.path, self.entries)
            self.dirty = False


def files_fingerprint(files: Iterable[tuple[str, Path]], cache: FingerprintCache, extra: str = "") -> str:
    """sha256 over (name, sha256 of bytes) of each (name, file) pair, in the given order, plus ``extra``."""
    files = list(files)
    h = hashlib.sha256()
    for (name, _), digest in zip(files, cache.sha256_many([f for _, f in files])):
        h.update(name.encode() + b"\0" + digest.encode() + b"\0")
    h.update(extra.encode())
    return h.hexdigest()
