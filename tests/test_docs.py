"""The documentation: the site builds strictly (no broken link or anchor), its generated
parts say what the code and bench/results/ say, and the README stays short with its one
table of measured numbers equal to the recorded results."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from chameleon_assets.core.schema import InvalidSetting, NonNegativeInt, PositiveFloat, UnitInterval, settings
from tests.conftest import REPO

DOCS = REPO / "docs"
sys.path.insert(0, str(DOCS))

from docgen import reference, results  # noqa: E402 - docs/ is not a package


def _load(name: str, path: Path):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mkdocs build --strict`` of the whole site, once for this module."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(DOCS / "mkdocs.yml"),
                           "-d", str(out)], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    return out


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text(encoding="utf-8")


def test_the_site_builds_strictly_and_every_marker_is_replaced(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= len(list((DOCS / "pages").glob("*.md")))
    leftovers = [str(p.relative_to(site)) for p in pages if re.search(r"gen:\s*[a-z]", p.read_text(encoding="utf-8"))]
    assert leftovers == []
    assert (site / "results" / "cpu_study_bits_per_byte.png").is_file()
    assert "Running chameleon-assets on Kubernetes" in _page(site, "kubernetes")


def test_the_reference_lists_every_field_of_the_schema(site: Path) -> None:
    from chameleon_assets import settings as app_settings
    from chameleon_assets.core.config import ModelConfig, TrainConfig
    from chameleon_assets.sections import config_sections

    html = _page(site, "reference")
    for cls in (app_settings.Profile, app_settings.MixturesConfig, ModelConfig, TrainConfig):
        assert f'id="{reference.anchor(cls)}"' in html, cls
        for f in dataclasses.fields(cls):
            assert f"<code>{f.name}</code>" in html, f"{cls.__name__}.{f.name}"
    for name in config_sections():
        assert f"<code>config_{name}</code>" in html
    assert 'id="method-regmix"' in html and 'id="method-chameleon_pretrain"' in html


def test_measured_numbers_on_the_pages_are_the_recorded_ones(site: Path) -> None:
    csv_rows = {r["mixture"]: r for r in results.rows("cpu_study_comparison.csv")}
    difference = float(csv_rows["chameleon_pretrain"]["d_bpb_avg"])
    assert f"+{difference:.3f}" in _page(site, "results")
    add = json.loads((REPO / "bench" / "results" / "add_domain.json").read_text())
    assert f"{add['sync_median_s']} s" in _page(site, "domains")
    gpu = _page(site, "gpu")
    if not (REPO / "bench" / "results" / "gpu.json").exists():
        assert "Not measured yet" in gpu


def test_the_readme_is_short_and_its_results_are_the_recorded_ones() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    render = _load("render_readme", DOCS / "render_readme.py")
    assert render.rendered(readme) == readme, "run `.venv/bin/python docs/render_readme.py`"
    prose = render.BLOCK.sub("", re.sub(r"```.*?```", "", readme, flags=re.S))
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", prose), "a date in the README"
    assert not re.search(r"\b\d[\d,.]*\s?(s|min|minutes|seconds|tokens/s|GiB|MB)\b", prose), "a measurement in prose"


def test_no_page_types_a_date() -> None:
    dated = [p.name for p in (DOCS / "pages").glob("*.md") if re.search(r"\b20\d\d-\d\d-\d\d\b", p.read_text())]
    assert dated == []


# --- The generators on inputs worked out by hand --------------------------------------

@settings
class Toy:
    """A toy settings class.

    ``mode``: how it runs."""

    rate: PositiveFloat = 0.5  # the step size
    share: UnitInterval = 1.0
    # how many, at least none
    count: NonNegativeInt = 3
    mode: Literal["fast", "slow"] = "fast"

    def check(self) -> None:
        if self.count > 10:
            raise InvalidSetting("count", f"must not exceed ten times the rate ({self.rate})", self.count)


@settings
class Outer:
    """Holds a toy."""

    toy: Toy = dataclasses.field(default_factory=lambda: Toy(count=4))
    names: list[str] = dataclasses.field(default_factory=lambda: ["a", "b"])


def test_a_settings_class_reads_as_its_fields_ranges_defaults_notes_and_rules() -> None:
    table = reference.class_table(Toy)
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| `")}
    assert "| number | &gt; 0 | `0.5` | the step size |" in lines["`rate`"]
    assert "| number | [0, 1] | `1` |" in lines["`share`"]
    assert "| integer | ≥ 0 | `3` | how many, at least none |" in lines["`count`"]
    assert "| string | one of `fast`, `slow` | `fast` | how it runs. |" in lines["`mode`"]
    assert "- `count`: must not exceed ten times the rate (`<rate>`)" in table
    assert "``mode``" not in table.split("| field")[0], "a field's paragraph moves into its row"


def test_a_nested_default_names_where_it_differs_and_links_to_its_class() -> None:
    section = reference.classes_section([(Outer, "")], done=set())
    assert f"{{#{reference.anchor(Toy)}}}" in section and "Written at: `toy`." in section
    assert f"[Toy](#{reference.anchor(Toy)}) with `count: 4`" in section
    assert "| list of string |" in section and "`[a, b]`" in section


def test_a_missing_gpu_record_is_said_and_a_present_one_rendered(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    assert "Not measured yet" in results.gpu()
    run = {"mode": "gpu", "commit": "abc1234", "date": "d",
           "environment": {"device": "NVIDIA H200", "peak_flops": 7.5e14, "peak_source": "measured: bf16 matmul",
                           "datasheet_peak_flops": 9.89e14, "torch": "t", "cuda": "c", "transformers": "x"},
           "results": {"ours": {"tokens_per_s": 412345.6, "mfu": 0.4321, "compiled": True, "loss": "full",
                                "precision": "bfloat16", "first_step_s": 41.0, "peak_memory_gib": 60.25},
                       "hf-trainer": {"error": "RuntimeError: out of memory"}},
           "summary": {"ours_to_hf-trainer": 1.25}}
    (tmp_path / "gpu.json").write_text(json.dumps({"runs": {"h200": run}}))
    text = results.gpu()
    assert "NVIDIA H200" in text and "750.0 TFLOP/s (measured: bf16 matmul)" in text and "data sheet 989" in text
    assert "| `ours` | 412,346 | 43.2% | yes | full | bfloat16 | 41.0 | 60.2 |" in text
    assert "RuntimeError: out of memory" in text and "| `ours_to_hf-trainer` | 1.250 |" in text


def test_an_unknown_marker_fails_the_build() -> None:
    from mkdocs.exceptions import PluginError

    from chameleon_assets.runner import STALENESS_PARTITION_LIMIT

    hooks = _load("docs_hooks", DOCS / "hooks.py")
    with pytest.raises(PluginError, match="unknown generator 'nope'"):
        hooks.render("<!-- gen: nope -->", "page.md")
    marker = "x <!-- gen: constant module=runner name=STALENESS_PARTITION_LIMIT --> y"
    assert hooks.render(marker, "p") == f"x {STALENESS_PARTITION_LIMIT:,} y"
