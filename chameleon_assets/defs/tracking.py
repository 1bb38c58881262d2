"""MLflow tracking as a Dagster resource (one experiment; one run per trained model)."""

import contextlib
import logging
from typing import Iterator

import dagster as dg

from chameleon_assets import paths

logging.getLogger("alembic").setLevel(logging.WARNING)


class MLflowTracking(dg.ConfigurableResource):
    """Where runs are logged. Empty ``tracking_uri``: ``$MLFLOW_TRACKING_URI`` or a SQLite
    store under the data directory (``data/mlflow/mlflow.db``). Empty
    ``artifact_location``: ``<data>/mlflow/artifacts`` for a new experiment (MLflow's own
    default with a database store is ``./mlruns`` in whatever directory the run starts in)."""

    tracking_uri: str = ""
    experiment_name: str = "chameleon"
    artifact_location: str = ""

    def uri(self) -> str:
        return self.tracking_uri or paths.mlflow_tracking_uri()

    def _ensure_experiment(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri())
        if client.get_experiment_by_name(self.experiment_name) is None:
            location = self.artifact_location or (paths.data_dir() / "mlflow" / "artifacts").as_uri()
            client.create_experiment(self.experiment_name, artifact_location=location)

    @contextlib.contextmanager
    def start_run(
        self, run_name: str | None = None, run_id: str | None = None, tags: dict | None = None
    ) -> Iterator["mlflow.ActiveRun"]:  # noqa: F821 (imported on use)
        """A new run (or, with ``run_id``, the existing one reopened) in the experiment."""
        import mlflow

        mlflow.set_tracking_uri(self.uri())
        self._ensure_experiment()
        mlflow.set_experiment(self.experiment_name)
        with mlflow.start_run(run_id=run_id, run_name=run_name, tags=tags) as run:
            yield run

    def log_series(self, run_id: str, key: str, values: list[float]) -> None:
        """Log ``values`` as one metric with steps 1..n, in batches."""
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri())
        metrics = [Metric(key, float(v), 0, step) for step, v in enumerate(values, 1)]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
