"""The default corpus builder on its real, installed packages."""

import json
from pathlib import Path

import pytest

from chameleon_assets.core.default_corpus import DEFAULT_DOMAINS, MIN_DOMAIN_BYTES, build_default_corpus
from chameleon_assets.core.registry import load_registry

pytestmark = pytest.mark.slow


def test_every_default_domain_is_real_large_enough_and_manifested(tmp_path: Path) -> None:
    manifests = build_default_corpus(tmp_path)
    assert len(manifests) == len(DEFAULT_DOMAINS) >= 6
    for m in manifests:
        assert m["text_bytes"] >= MIN_DOMAIN_BYTES, m["domain"]
        assert m["documents"] > 10
        for key in ("source_package", "source_version", "licence", "sha256", "file_bytes"):
            assert m[key], (m["domain"], key)
        on_disk = json.loads((tmp_path / m["domain"] / "manifest.json").read_text())
        assert on_disk == m
    # Deterministic: a rebuild writes identical bytes.
    again = build_default_corpus(tmp_path / "again")
    assert [m["sha256"] for m in again] == [m["sha256"] for m in manifests]


def test_shipped_registry_lists_exactly_the_default_domains(tmp_path: Path) -> None:
    build_default_corpus(tmp_path / "data" / "raw")
    repo = Path(__file__).resolve().parents[1]
    specs = load_registry(repo / "conf" / "domains.yaml", base=tmp_path)
    assert [s.name for s in specs] == [d.name for d in DEFAULT_DOMAINS]
