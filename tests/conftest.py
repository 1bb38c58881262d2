"""Shared fixtures: an isolated project (conf, data, Dagster home) with small domains."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (`make test` runs `-n 2`) each worker, and what it starts, gets its
# share of the cores: two workers of two threads each on two cores run slower than one.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

REPO = Path(__file__).resolve().parents[1]

# The costliest work units first (an xdist_group or module, measured on 2 cores: 100-420 s
# each). pytest-xdist hands units to the workers in collection order, so one of these
# handed out last would leave a worker running it alone at the end of `make test`.
HEAVY_FIRST = ["test_provenance", "test_ui", "test_team_instance", "test_faults", "test_finetune", "test_gpu_smoke",
               "test_ddp", "test_parallel", "test_sync", "test_methods_assets", "test_end_to_end", "test_wheelhouse"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the modules of HEAVY_FIRST before the rest (a stable sort: each module's tests
    keep their order and stay together, so a module fixture is still built once)."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))

# Small enough that the proxy, embeddings and a base model train in seconds.
TINY_PROFILE = """
tokenizer: bpe-8k
seed: 0
device: cpu
val_fraction: 0.2
proxy:
  model: {arch: llama, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, context_length: 32}
  train: {tokens: 4096, batch_size: 4, lr: 1.0e-2, warmup_steps: 2, checkpoint_every: 8}
embedding: {num_samples: 8, sample_length: 16, batch_size: 4}
base_model:
  model: {arch: llama, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, context_length: 32}
  train: {tokens: 4096, batch_size: 4, lr: 1.0e-2, warmup_steps: 2, checkpoint_every: 8}
  mixtures: [uniform, chameleon_pretrain]
evaluation: {tasks: [arc_easy_local], num_fewshot: 0, limit: 8, batch_size: 8, ppl_windows: 4}
finetune:
  train: {tokens: 2048, batch_size: 4, lr: 5.0e-3, warmup_steps: 2, checkpoint_every: 4}
"""

TOPICS = {
    "alpha": "The river flows past the old mill where farmers bring grain every autumn morning.",
    "beta": "def add(a, b):\n    return a + b\n\nclass Stack:\n    def push(self, x):\n        self.items.append(x)\n",
    "gamma": "Whereas the licensee shall indemnify the licensor against all claims arising hereunder.",
    "delta": "Preheat the oven to 180 degrees. Whisk two eggs with sugar, then fold in the flour.",
}


def write_domain(root: Path, name: str, n_docs: int = 12, text: str | None = None) -> Path:
    """Write ``n_docs`` documents for a fixture domain as jsonl; return the file."""
    base = text or TOPICS[name]
    path = root / name / "documents.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n_docs):
            fh.write(json.dumps({"text": f"{base} Document number {i}. " + base * (1 + i % 3)}) + "\n")
    return path


def write_registry(project: Path, names: list[str]) -> Path:
    lines = ["domains:"]
    for n in names:
        lines.append(f"  - {{name: {n}, source: {project / 'raw' / n / 'documents.jsonl'}}}")
    reg = project / "conf" / "domains.yaml"
    reg.write_text("\n".join(lines) + "\n")
    return reg


def use_project(root: Path, monkeypatch: pytest.MonkeyPatch, mlflow_db: Path | None = None) -> Path:
    """Point the environment at the project under ``root`` (conf, data, Dagster home, MLflow store)."""
    conf = root / "conf"
    monkeypatch.setenv("CHAMELEON_CONF_DIR", str(conf))
    monkeypatch.setenv("CHAMELEON_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
    monkeypatch.setenv("CHAMELEON_PROFILE", "tiny")
    monkeypatch.setenv("CHAMELEON_REGISTRY", str(conf / "domains.yaml"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_db or root / 'mlflow.db'}")
    return root


def make_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Create an isolated project under ``root``: conf/ (tiny profile), an empty Dagster home; point the env at it."""
    conf = root / "conf"
    (conf / "profiles").mkdir(parents=True)
    shutil.copy(REPO / "conf" / "mixtures.yaml", conf / "mixtures.yaml")
    (conf / "profiles" / "tiny.yaml").write_text(TINY_PROFILE)
    (root / "dagster_home").mkdir()
    return use_project(root, monkeypatch)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated project: conf/ (tiny profile), data dir and Dagster home under tmp_path."""
    return make_project(tmp_path, monkeypatch)


class SavedProject:
    """A project materialised once, at a fixed path, and put back there for each test.

    Building a fully materialised tiny project takes 15-30 s; tests that each start from
    one share a single build per module (and xdist worker). The project is restored to
    the same path it was built at, which keeps every absolute path the run recorded
    (registry sources, Dagster's event log, ``current`` links, MLflow artefact locations)
    true, so a test sees exactly what a fresh run would have left.
    """

    def __init__(self, work: Path, template: Path) -> None:
        self.work, self.template = work, template

    @classmethod
    def build(cls, factory: pytest.TempPathFactory, name: str, build) -> "SavedProject":  # noqa: ANN001
        """Make a project, run ``build(root) -> instance`` in it, keep a copy of the result."""
        work = factory.mktemp(name) / "project"
        with pytest.MonkeyPatch.context() as mp:
            make_project(work, mp)
            build(work).dispose()
        template = work.parent / "template"
        shutil.copytree(work, template, symlinks=True)
        return cls(work, template)

    def restore(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
        """Put the built project back at its path; return ``(root, instance)``."""
        from chameleon_assets.runner import get_instance

        shutil.rmtree(self.work)
        shutil.copytree(self.template, self.work, symlinks=True)
        # MLflow keeps one engine per store URI for the life of the process: a store file
        # replaced under a reused URI would be written through a stale connection, so each
        # test gets the run's store under a URI of its own.
        shutil.copy2(self.work / "mlflow.db", tmp_path / "mlflow.db")
        use_project(self.work, monkeypatch, mlflow_db=tmp_path / "mlflow.db")
        return self.work, get_instance()


@pytest.fixture(scope="module")
def saved_project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SavedProject:
    """The test module's ``build_project(root) -> instance``, run once per module (see SavedProject)."""
    return SavedProject.build(tmp_path_factory, request.module.__name__.rsplit(".", 1)[-1],
                              request.module.build_project)


@pytest.fixture
def restored_project(saved_project: SavedProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """``(root, instance)`` of the module's materialised project, as its build left it."""
    return saved_project.restore(tmp_path, monkeypatch)


def register(instance, domains: list[str], mixtures: list[str] | None = None, seeds: list[int] | None = None) -> None:
    """Make the instance's domain, mixture and seed partitions equal these lists."""
    from chameleon_assets.defs.partitions import partition_changes

    partition_changes(instance, domains, mixtures if mixtures is not None else ["uniform", "chameleon_pretrain"],
                      seeds if seeds is not None else [0]).apply(instance)


def current(project: Path, kind: str, partition: str | None = None) -> Path:
    """The folder an artefact's ``current`` link points to (``data/artifacts/<kind>[/<partition>]/current``)."""
    base = project / "data" / "artifacts" / kind
    return (base / partition / "current" if partition else base / "current").resolve()


def materialised(instance, keys) -> dict[str, list[str]]:  # noqa: ANN001
    """The partition ("" when unpartitioned) of every materialisation so far, per asset, sorted."""
    import dagster as dg

    return {k: sorted(r.partition_key or "" for r in
                      instance.fetch_materializations(dg.AssetKey(k), limit=10_000).records) for k in keys}


def new_materialisations(before: dict, after: dict) -> dict[str, list[str]]:
    """Per asset, the materialisations in ``after`` that ``before`` does not hold (``materialised``)."""
    diff = {}
    for key in after:
        rest = list(after[key])
        for p in before[key]:
            rest.remove(p)
        diff[key] = rest
    return diff


def configure_chameleon(project: Path, lam: float, t_pretrain: float, t_finetune: float) -> None:
    """Set conf/mixtures.yaml's CHAMELEON ridge and temperatures (the shipped file holds 10, 5 and 0.2)."""
    path = project / "conf" / "mixtures.yaml"
    text = path.read_text()
    for old, new in (("lam: 10.0", f"lam: {lam}"), ("t_pretrain: 5.0", f"t_pretrain: {t_pretrain}"),
                     ("t_finetune: 0.2", f"t_finetune: {t_finetune}")):
        assert old in text, f"conf/mixtures.yaml no longer holds {old!r}"
        text = text.replace(old, new, 1)
    path.write_text(text)


def chameleon_by_eigendecomposition(means, lam: float, t_pretrain: float, t_finetune: float):  # noqa: ANN001, ANN201
    """(tau, pretrain, finetune) for domain mean embeddings, worked out independently of
    core.krls: the means centred explicitly (not H K H), K_c = U diag(s) U^T, and
    tau_i = sum_j U_ij^2 s_j / (s_j + lam k) (no solve), normalised; then the two softmaxes."""
    import numpy as np

    centred = np.asarray(means, dtype=np.float64) - np.asarray(means, dtype=np.float64).mean(axis=0)
    s, u = np.linalg.eigh(centred @ centred.T)
    s = np.clip(s, 0.0, None)  # K_c is positive semi-definite; its zero eigenvalue may round below 0
    tau = (u**2 * (s / (s + lam * len(s)))).sum(axis=1)
    tau = tau / tau.sum()
    pre, fin = np.exp((1 / tau) / t_pretrain), np.exp(tau / t_finetune)
    return tau, pre / pre.sum(), fin / fin.sum()
