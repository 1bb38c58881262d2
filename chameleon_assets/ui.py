"""``chameleon ui``: the Dagster and MLflow UIs, started together and stopped together.

Both servers start in sessions of their own (so a Ctrl-C in the terminal reaches this
process only, which then stops them in order). Their URLs are printed once each one
answers; the MLflow URL opens the ``chameleon`` experiment's runs table in the
"model training" view (MLflow 3 otherwise opens its GenAI traces view, which is empty
here). On Ctrl-C or SIGTERM every process they started (code servers, the daemon,
MLflow's job workers) receives SIGTERM, and whatever is left after ``GRACE_S`` seconds
SIGKILL, so nothing outlives the command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from chameleon_assets import paths

GRACE_S = 4.0
START_TIMEOUT_S = 240.0


@dataclass
class UIUrls:
    """Where the two UIs answer."""

    dagster: str
    mlflow: str
    mlflow_runs: str


def answers(url: str, timeout: float = 2.0) -> bool:
    """True once ``url`` returns any HTTP response."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 (loopback URL we built)
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def experiment_runs_url(base: str, tracking_uri: str, experiment: str = "chameleon") -> str:
    """The runs table of ``experiment`` in MLflow's model-training view (created if missing)."""
    from chameleon_assets.defs.tracking import MLflowTracking

    tracking = MLflowTracking(tracking_uri=tracking_uri, experiment_name=experiment)
    tracking._ensure_experiment()
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    return f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"


def descendants(pid: int) -> list:
    """Every live process below ``pid`` (psutil.Process objects)."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop(procs: list[subprocess.Popen], grace: float = GRACE_S) -> None:
    """SIGTERM ``procs`` and everything below them; SIGKILL what is left after ``grace`` s."""
    import psutil

    family = []
    for p in procs:
        family += descendants(p.pid)
        try:
            family.append(psutil.Process(p.pid))
        except psutil.NoSuchProcess:
            pass
    for proc in family:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=2)
    for p in procs:
        p.poll()


def serve(dagster_port: int, mlflow_port: int) -> int:
    """Start both UIs, print their URLs once they answer, and stop both on Ctrl-C/SIGTERM."""
    env = {**os.environ, "DAGSTER_HOME": str(paths.dagster_home())}
    paths.dagster_home().mkdir(parents=True, exist_ok=True)
    bindir = os.path.dirname(sys.executable)
    tracking_uri = paths.mlflow_tracking_uri()
    procs: list[subprocess.Popen] = []
    stopping = []

    def on_signal(signum: int, frame) -> None:  # noqa: ANN001
        stopping.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        procs.append(subprocess.Popen(
            [os.path.join(bindir, "mlflow"), "server", "--backend-store-uri", tracking_uri,
             "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
            env=env, start_new_session=True))
        procs.append(subprocess.Popen(
            [os.path.join(bindir, "dagster"), "dev", "-w", str(paths.REPO_ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(dagster_port)], env=env, cwd=paths.REPO_ROOT, start_new_session=True))
        urls = UIUrls(f"http://127.0.0.1:{dagster_port}", f"http://127.0.0.1:{mlflow_port}", "")
        t0 = time.monotonic()
        for name, url, probe in (("MLflow", urls.mlflow, f"{urls.mlflow}/health"),
                                 ("Dagster", urls.dagster, f"{urls.dagster}/server_info")):
            while not answers(probe):
                dead = [p for p in procs if p.poll() is not None]
                if dead:
                    print(f"error: {name} UI exited with code {dead[0].returncode} before it answered",
                          file=sys.stderr, flush=True)
                    return 1
                if time.monotonic() - t0 > START_TIMEOUT_S:
                    print(f"error: {name} UI did not answer at {url} within {START_TIMEOUT_S:.0f}s", file=sys.stderr,
                          flush=True)
                    return 1
                time.sleep(0.5)
        urls.mlflow_runs = experiment_runs_url(urls.mlflow, tracking_uri)
        print(f"Dagster UI: {urls.dagster}/asset-groups  (lineage of every asset)", flush=True)
        print(f"MLflow UI:  {urls.mlflow_runs}  (one run per trained model; select runs, then Compare)", flush=True)
        print("Ctrl-C stops both.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = next(p for p in procs if p.poll() is not None)
        print(f"error: a UI server exited with code {dead.returncode}; stopping the other", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(procs)
        if stopping:
            print("stopped both UIs", flush=True)
