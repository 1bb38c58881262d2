"""The configuration schema: ranges, strict types and one-line errors naming file and field.

Also pins the data versions of the shipped profiles' configuration sections, which the
schema must not change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chameleon_assets.settings import CONFIG_SECTIONS, load_mixtures, load_profile, section_version

REPO = Path(__file__).resolve().parents[1]

# The data versions (``section_version``) of every configuration section for the shipped
# profiles with the shipped conf/mixtures.yaml. They are the data versions that existing
# ``data/`` materialisations carry: if one changes, every asset reading that section is
# stale and is rebuilt although nobody changed a setting. Computed with the hand-written
# validator that preceded the pydantic schema; the schema must normalise to the same data.
PINNED_SECTION_VERSIONS = {
    "cpu": {
        "corpus": "9c963d450a4322fb2af2c43c",
        "proxy": "e02e9d1a65a87c62b3a198c4",
        "embedding": "3e6aa07a25e2708cb53dd1ae",
        "mixing": "1e5f6505f01604be41cef123",
        "base_model": "255957f9fcaf02b9674772ed",
        "evaluation": "025ec514eb6ec382b8b9cb58",
    },
    "gpu": {
        "corpus": "7f4b4092e87253dce321cc33",
        "proxy": "f7db32eef40046fde1e049af",
        "embedding": "45b450afe725e3ad0bec0978",
        "mixing": "d0af1259a867081b16df0fb9",
        "base_model": "5fd586281151dbf4f768b4de",
        "evaluation": "ac21d3cdb36bab971b464eb1",
    },
}


@pytest.fixture
def shipped_conf(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the configuration at the repository's own conf/."""
    monkeypatch.setenv("CHAMELEON_CONF_DIR", str(REPO / "conf"))
    return REPO / "conf"


@pytest.mark.parametrize("profile", sorted(PINNED_SECTION_VERSIONS))
def test_shipped_section_versions_are_unchanged(shipped_conf: Path, profile: str) -> None:
    p, m = load_profile(profile), load_mixtures()
    assert {s: section_version(s, p, m) for s in CONFIG_SECTIONS} == PINNED_SECTION_VERSIONS[profile]
