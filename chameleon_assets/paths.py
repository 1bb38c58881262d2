"""The one place that knows where things live.

Everything generated goes under the data directory (``data/`` in the repository by
default, or ``$CHAMELEON_DATA_DIR``). These are functions, not constants, so that tests
and users can point them elsewhere through the environment at any time.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """Root of all generated content (``$CHAMELEON_DATA_DIR``, default ``<repo>/data``)."""
    return Path(os.environ.get("CHAMELEON_DATA_DIR", REPO_ROOT / "data")).resolve()


def conf_dir() -> Path:
    """Directory holding ``domains.yaml``, ``mixtures.yaml`` and ``profiles/``."""
    return Path(os.environ.get("CHAMELEON_CONF_DIR", REPO_ROOT / "conf")).resolve()


def raw_dir() -> Path:
    """Where the default corpus builder writes ``<domain>/documents.jsonl``."""
    return data_dir() / "raw"


def artifacts_dir() -> Path:
    """Root of the assets' on-disk artefacts (token shards, embeddings, models)."""
    return data_dir() / "artifacts"


# Every artefact lives in a folder named by its data version (``<kind>/<partition>/<version>``),
# so a step reads exactly the version its input's data version names, and a newer or
# concurrent run never overwrites what another step is reading. ``current`` beside the
# versions is a symbolic link to the latest one, for people and outside tools only.


def corpus_dir(domain: str, version: str) -> Path:
    return artifacts_dir() / "corpus" / domain / version


def embeddings_dir(domain: str, version: str) -> Path:
    return artifacts_dir() / "embeddings" / domain / version


def stage_dir(kind: str, stage: str = "pretrain") -> Path:
    """Root of an unpartitioned kind of artefact of one stage: ``<artifacts>/<kind>`` for the
    pretraining stage, ``<artifacts>/finetune/<kind>`` for the finetuning one (its own root,
    so that pruning one stage's old versions never touches the other's)."""
    return artifacts_dir() / kind if stage == "pretrain" else artifacts_dir() / "finetune" / kind


def affinity_dir(version: str, stage: str = "pretrain") -> Path:
    return stage_dir("affinity", stage) / version


def proxy_dir(version: str) -> Path:
    return artifacts_dir() / "proxy_model" / version


def weights_dir(version: str, stage: str = "pretrain") -> Path:
    return stage_dir("weights", stage) / version


def diagnostics_dir(version: str, stage: str = "pretrain") -> Path:
    return stage_dir("diagnostics", stage) / version


def method_dir(method: str, version: str) -> Path:
    """A computed method's weights (``doremi``, ``doge``, ``regmix``, ``olmix``, ``olmix_reuse``)."""
    return artifacts_dir() / "methods" / method / version


def regmix_run_dir(run: int, version: str) -> Path:
    return artifacts_dir() / "methods" / "regmix_swarm" / f"run-{run}" / version


def olmix_reuse_run_dir(run: int, version: str) -> Path:
    return artifacts_dir() / "methods" / "olmix_reuse_swarm" / f"run-{run}" / version


def mixture_table_dir(version: str) -> Path:
    return artifacts_dir() / "mixture_table" / version


def base_model_dir(mixture: str, seed: int, version: str) -> Path:
    return artifacts_dir() / "base_model" / mixture / f"seed-{seed}" / version


def evaluation_dir(mixture: str, seed: int, version: str) -> Path:
    return artifacts_dir() / "evaluation" / mixture / f"seed-{seed}" / version


def comparison_dir(version: str, stage: str = "pretrain") -> Path:
    return stage_dir("comparison", stage) / version


def finetuned_model_dir(mixture: str, seed: int, version: str) -> Path:
    return artifacts_dir() / "finetuned_model" / mixture / f"seed-{seed}" / version


def finetune_evaluation_dir(mixture: str, seed: int, version: str) -> Path:
    return artifacts_dir() / "finetune_evaluation" / mixture / f"seed-{seed}" / version


def checkpoint_dir(name: str, version: str) -> Path:
    """Training checkpoints of the run that will produce data version ``version`` of ``name``."""
    return artifacts_dir() / "checkpoints" / name / version


def values_dir() -> Path:
    """Where the IO manager keeps each output's small descriptor, one file per data version."""
    return artifacts_dir() / ".values"


def fingerprint_cache() -> Path:
    """The (size, mtime) -> sha256 cache that keeps observing raw sources cheap."""
    return artifacts_dir() / ".cache" / "fingerprints.json"


def dagster_home() -> Path:
    """``$DAGSTER_HOME`` if set, else ``<data>/dagster_home``."""
    return Path(os.environ.get("DAGSTER_HOME", data_dir() / "dagster_home")).resolve()


def mlflow_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite store under the data directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = data_dir() / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def package_dir(module: str, install_hint: str) -> Path:
    """The folder of an installed package, located with ``find_spec`` (never a fixed path).

    Raises FileNotFoundError with ``install_hint`` when the package is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package folder '{module}' not found: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def resolve(path: str | os.PathLike, base: Path | None = None) -> Path:
    """Resolve a user-given path: absolute as is, relative against ``base`` (the repo root)."""
    p = Path(os.path.expandvars(os.path.expanduser(str(path))))
    return p if p.is_absolute() else (base or REPO_ROOT) / p
