"""Content fingerprints of files, re-reading bytes only when a file's size or mtime changed.

Observing the raw domain sources (every sensor tick, every ``chameleon run``) must not
re-hash gigabytes each time. ``FingerprintCache`` keeps, per file, the (size, mtime_ns)
it last saw and the sha256 of the bytes it read then; a file whose size and mtime are
unchanged is trusted to have unchanged bytes (the same rule ``make`` and ``rsync`` use).
"""

from __future__ import annotations

import hashlib
import json
import os
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
        st = os.stat(file)
        key = str(Path(file).resolve())
        hit = self.entries.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        digest = sha256_file(file)
        self.entries[key] = [st.st_size, st.st_mtime_ns, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.path is not None and self.dirty:
            write_json(self.path, self.entries)
            self.dirty = False


def files_fingerprint(files: Iterable[tuple[str, Path]], cache: FingerprintCache, extra: str = "") -> str:
    """sha256 over (name, sha256 of bytes) of each (name, file) pair, in the given order, plus ``extra``."""
    h = hashlib.sha256()
    for name, f in files:
        h.update(name.encode() + b"\0" + cache.sha256(f).encode() + b"\0")
    h.update(extra.encode())
    return h.hexdigest()
