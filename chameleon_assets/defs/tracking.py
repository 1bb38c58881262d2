"""MLflow tracking as a Dagster resource: one experiment; one run per trained model (a
mixture's seeds nested under one parent run per mixture, which holds the aggregates).

Every tracking call is bounded in time. For an ``http(s)`` tracking URI, each call first
asks ``<uri>/health`` and fails within ``timeout_s`` when nothing answers, with a message
naming the URI; and MLflow's own HTTP client, which by default retries for minutes
(7 retries, backoff factor 2, 120 s per request), is bounded through its environment
variables (``timeout_s`` per request, 2 retries, backoff factor 1) unless they are set, so
a server that stops answering mid-run also fails in bounded time. A SQLite or file store
(the default, ``data/mlflow/mlflow.db``) is local: no probe, nothing changed.
"""

import contextlib
import logging
import math
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import dagster as dg

from chameleon_assets import paths

if TYPE_CHECKING:
    from chameleon_assets.core.corpus import CorpusShards

logging.getLogger("alembic").setLevel(logging.WARNING)

# MLflow's HTTP settings applied when the user has not set them (the timeout is timeout_s).
BOUNDED_MLFLOW_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
_set_here: dict[str, str] = {}  # the values this module wrote, told apart from the user's own


# The split of a domain's corpus each context reads, and how its dataset is named. MLflow
# keeps one dataset per (name, digest) and a run lists a dataset once, under the context it
# was first logged with, so the held-out split needs a name of its own to be listed too.
DATASET_SPLITS = {"training": ("train.bin", "{domain}"), "evaluation": ("val.bin", "{domain}/val")}


def log_domain_inputs(shards: Iterable["CorpusShards"], context: str) -> None:
    """Log each domain's corpus split on the active MLflow run as a dataset input: named
    for the domain, its digest the corpus data version, its source the split's file, under
    ``context`` ("training" or "evaluation"); the runs table's Dataset column lists them."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    split, name = DATASET_SPLITS[context]
    datasets = []
    for s in shards:
        with warnings.catch_warnings():
            # MLflow registers its local-file source class twice and warns that a path is ambiguous.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            source = resolve_dataset_source(str(Path(s.directory) / split))
        datasets.append(MetaDataset(source, name=name.format(domain=s.domain), digest=s.data_version))
    if datasets:
        mlflow.log_inputs(datasets=datasets, contexts=[context] * len(datasets), tags_list=[None] * len(datasets))


class TrackingUnreachable(RuntimeError):
    """The MLflow tracking server did not answer in time."""


def bound_mlflow_http(timeout_s: float) -> None:
    """Bound MLflow's HTTP timeout and retries, leaving any value the user set alone."""
    wanted = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s))), **BOUNDED_MLFLOW_HTTP}
    for key, value in wanted.items():
        current = os.environ.get(key)
        if current is None or current == _set_here.get(key):
            os.environ[key] = value
            _set_here[key] = value


def _redacted(uri: str) -> str:
    """The URI without any password in it (for messages)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.netloc.rsplit('@', 1)[1]}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def probe_http(uri: str, timeout_s: float) -> str | None:
    """None if something answers ``GET <uri>/health`` within ``timeout_s``, else why not.

    Any HTTP answer counts, an error status or a TLS certificate MLflow may accept
    included: the question is only whether the server is there. Name resolution is
    bounded too: the request runs in a thread that is waited on for ``timeout_s``.
    """
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # credentials are not needed to be answered
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                response.read(64)
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except urllib.error.URLError as exc:
            outcome.append(None if isinstance(exc.reason, ssl.SSLError) else _reason(exc.reason))
        except ssl.SSLError:
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - a timeout, a reset, a malformed answer
            outcome.append(_reason(exc))

    thread = threading.Thread(target=ask, name="mlflow-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return outcome[0] if outcome else "no answer"


def _reason(exc: object) -> str:
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return "no answer"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


class MLflowTracking(dg.ConfigurableResource):
    """Where runs are logged. Empty ``tracking_uri``: ``$MLFLOW_TRACKING_URI`` or a SQLite
    store under the data directory (``data/mlflow/mlflow.db``). Empty
    ``artifact_location``: ``<data>/mlflow/artifacts`` for a new experiment (MLflow's own
    default with a database store is ``./mlruns`` in whatever directory the run starts in)."""

    tracking_uri: str = ""
    experiment_name: str = "chameleon"
    artifact_location: str = ""
    timeout_s: float = 10.0

    def uri(self) -> str:
        return self.tracking_uri or paths.mlflow_tracking_uri()

    def _ready_uri(self) -> str:
        """The tracking URI, checked to answer (http/https only) and with MLflow's HTTP bounded."""
        uri = self.uri()
        if urllib.parse.urlsplit(uri).scheme.lower() not in ("http", "https"):
            return uri
        bound_mlflow_http(self.timeout_s)
        reason = probe_http(uri, self.timeout_s)
        if reason is not None:
            setting = "the mlflow_tracking resource's tracking_uri" if self.tracking_uri else "MLFLOW_TRACKING_URI"
            local = paths.data_dir() / "mlflow" / "mlflow.db"
            raise TrackingUnreachable(
                f"MLflow tracking server {_redacted(uri)} did not answer within {self.timeout_s:g}s ({reason}); "
                f"start it, or unset {setting} to use the local store {local}"
            )
        return uri

    def _ensure_experiment(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self._ready_uri())
        if client.get_experiment_by_name(self.experiment_name) is None:
            location = self.artifact_location or (paths.data_dir() / "mlflow" / "artifacts").as_uri()
            client.create_experiment(self.experiment_name, artifact_location=location)

    @contextlib.contextmanager
    def start_run(
        self, run_name: str | None = None, run_id: str | None = None, tags: dict | None = None,
        parent_run_id: str | None = None,
    ) -> Iterator["mlflow.ActiveRun"]:  # noqa: F821 (imported on use)
        """A new run (or, with ``run_id``, the existing one reopened) in the experiment,
        nested under ``parent_run_id`` when given."""
        import mlflow

        mlflow.set_tracking_uri(self.uri())
        self._ensure_experiment()
        mlflow.set_experiment(self.experiment_name)
        with mlflow.start_run(run_id=run_id, run_name=run_name, tags=tags, parent_run_id=parent_run_id) as run:
            yield run

    def parent_run(self, name: str, key: str, tags: dict | None = None) -> str:
        """The id of the run tagged ``parent_key=<key>``, created (named ``name``) on first use.

        A mixture's runs, one per seed, are nested under one such parent run; the
        comparison logs the mixture's aggregates over seeds there. ``key`` names what the
        seeds share (the mixture's weights, data and training configuration), so new
        weights get a new parent. Concurrent steps creating the same parent take turns.
        """
        from mlflow.tracking import MlflowClient

        from chameleon_assets.core.locks import file_lock

        client = MlflowClient(self._ready_uri())
        self._ensure_experiment()
        experiment = client.get_experiment_by_name(self.experiment_name)
        lock = paths.artifacts_dir() / ".locks" / "mlflow-parents" / f"{key}.lock"
        with file_lock(lock, f"creating the MLflow parent run {name}"):
            found = client.search_runs([experiment.experiment_id], filter_string=f"tags.parent_key = '{key}'",
                                       order_by=["attributes.start_time ASC"], max_results=1)
            if found:
                return found[0].info.run_id
            run = client.create_run(experiment.experiment_id, run_name=name,
                                    tags={"parent_key": key, **(tags or {})})
            client.set_terminated(run.info.run_id)
            return run.info.run_id

    def log_values(self, run_id: str, metrics: dict[str, float], tags: dict[str, str] | None = None) -> None:
        """Log ``metrics`` (finite values only) and ``tags`` on an existing run, in one batch."""
        from mlflow.entities import Metric, RunTag
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self._ready_uri())
        stamp = int(1000 * time.time())
        batch = [Metric(k, float(v), stamp, 0) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        client.log_batch(run_id, metrics=batch, tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])

    def log_trajectory(self, run_id: str, prefix: str, names: list[str], steps: list[int],
                       trajectory: list[list[float]]) -> None:
        """Mixture weights over training as metrics ``<prefix>.<domain>``, each logged at the
        optimiser step from which it held (``trajectory[i]`` from ``steps[i]``)."""
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self._ready_uri())
        metrics = [Metric(f"{prefix}.{d}", float(w[j]), 0, int(s))
                   for s, w in zip(steps, trajectory) for j, d in enumerate(names)]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])

    def log_series(self, run_id: str, key: str, values: list[float]) -> None:
        """Log ``values`` as one metric with steps 1..n, in batches."""
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self._ready_uri())
        metrics = [Metric(key, float(v), 0, step) for step, v in enumerate(values, 1)]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
