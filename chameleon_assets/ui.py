"""``chameleon ui``: the Dagster and MLflow UIs, started together and stopped together.

Both servers start in sessions of their own (so a Ctrl-C in the terminal reaches this
process only, which then stops them in order). Their URLs are printed once each one
answers; the MLflow URL opens the ``chameleon`` experiment's runs table in the
"model training" view (MLflow 3 otherwise opens its GenAI traces view, which is empty
here). On Ctrl-C, SIGTERM or SIGHUP (the terminal closed) every process they started (code
servers, the daemon, run workers, MLflow's job workers: everything in their sessions)
receives SIGTERM, and whatever is left after ``GRACE_S`` seconds SIGKILL, so nothing
outlives the command. (A SIGKILL of ``chameleon ui`` itself cannot be caught: then the
servers keep running.)
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


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes via a proxy


def answers(url: str, timeout: float = 2.0, need_ok: bool = False) -> bool:
    """True once ``url`` returns an HTTP response (``need_ok``: a 200)."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return response.status == 200 or not need_ok
    except urllib.error.HTTPError:
        return not need_ok
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


def family(pids: list[int]) -> list:
    """The processes ``pids``, their descendants, and every process in their sessions.

    Each server runs in a session of its own, and nothing it starts leaves it, so the
    session also finds processes whose parent died (re-parented to init) and ones
    started after an earlier look.
    """
    import psutil

    found = {}
    for pid in pids:
        for proc in descendants(pid):
            found[proc.pid] = proc
        try:
            found[pid] = psutil.Process(pid)
        except psutil.NoSuchProcess:
            pass
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) in pids:
                found[proc.pid] = proc
        except (ProcessLookupError, PermissionError):
            continue
    return list(found.values())


def stop(procs: list[subprocess.Popen], grace: float = GRACE_S) -> None:
    """SIGTERM ``procs`` and everything of theirs (``family``); SIGKILL what is left after ``grace`` s."""
    import psutil

    pids = [p.pid for p in procs]
    members = family(pids)
    for proc in members:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(members, timeout=grace)
    left = [p for p in family(pids) if p.is_running()]  # a look again: anything started meanwhile
    for proc in left:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    for pid in pids:  # and the sessions' process groups, whatever they hold now
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    psutil.wait_procs(left, timeout=2)
    for p in procs:
        p.poll()


def require_ui_packages(mlflow_server: bool = True) -> None:
    """Refuse in one line when the ``ui`` extra is not installed: a node set up from the
    wheelhouse runs the graph without the two servers' built web apps (about 25 MB)."""
    # mlflow-skinny (the tracking client the graph needs) has no mlflow/server/js: the full mlflow does.
    wanted = [("dagster-webserver", "dagster_webserver")] + ([("mlflow", "mlflow.server.js")] if mlflow_server else [])
    missing = [name for name, module in wanted if _find(module) is None]
    if missing:
        raise RuntimeError(f"the UIs need {' and '.join(missing)}, which this environment lacks: "
                           "pip install -e '.[ui]' (the wheelhouse for GPU nodes leaves them out)")


def _find(module: str):  # noqa: ANN202
    import importlib.util

    try:
        return importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None


def serve(dagster_port: int, mlflow_port: int) -> int:
    """Start both UIs, print their URLs once they answer, and stop both on Ctrl-C, SIGTERM or SIGHUP.

    With an ``http(s)`` ``MLFLOW_TRACKING_URI`` no MLflow server is started: the URL
    printed is that server's.
    """
    tracking_uri = paths.mlflow_tracking_uri()
    remote = tracking_uri.startswith(("http://", "https://"))
    require_ui_packages(mlflow_server=not remote)
    from chameleon_assets.runner import get_instance

    # The instance's dagster.yaml (written on first use) is what the webserver reads: with it
    # a first visit opens on the lineage, not on Dagster's community dialog.
    get_instance().dispose()
    env = {**os.environ, "DAGSTER_HOME": str(paths.dagster_home())}
    bindir = os.path.dirname(sys.executable)
    servers: list[tuple[str, subprocess.Popen]] = []
    stopping: list[int] = []
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def on_signal(signum: int, frame) -> None:  # noqa: ANN001
        stopping.append(signum)  # only a flag: nothing is interrupted half-way (a Popen, a query)

    previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        if not remote:
            servers.append(("MLflow", subprocess.Popen(
                [os.path.join(bindir, "mlflow"), "server", "--backend-store-uri", tracking_uri,
                 "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
                env=env, start_new_session=True)))
        if not stopping:
            servers.append(("Dagster", subprocess.Popen(
                [os.path.join(bindir, "dagster"), "dev", "-w", str(paths.REPO_ROOT / "workspace.yaml"),
                 "-h", "127.0.0.1", "-p", str(dagster_port)], env=env, cwd=paths.REPO_ROOT,
                start_new_session=True)))
        dagster = f"http://127.0.0.1:{dagster_port}"
        mlflow = tracking_uri.rstrip("/") if remote else f"http://127.0.0.1:{mlflow_port}"
        probes = [("Dagster", f"{dagster}/server_info", False)]
        if not remote:
            probes.insert(0, ("MLflow", f"{mlflow}/health", True))
        t0 = time.monotonic()
        for name, probe, need_ok in probes:
            while not stopping and not answers(probe, need_ok=need_ok):
                dead = [(n, p) for n, p in servers if p.poll() is not None]
                if dead:
                    print(f"error: the {dead[0][0]} UI exited with code {dead[0][1].returncode} before it answered",
                          file=sys.stderr, flush=True)
                    return 1
                if time.monotonic() - t0 > START_TIMEOUT_S:
                    print(f"error: the {name} UI did not answer at {probe} within {START_TIMEOUT_S:.0f}s",
                          file=sys.stderr, flush=True)
                    return 1
                time.sleep(0.5)
        if stopping:
            return 0
        runs = experiment_runs_url(mlflow, tracking_uri)
        print(f"Dagster UI: {dagster}/asset-groups  (lineage of every asset)", flush=True)
        print(f"MLflow UI:  {runs}  (one run per trained model; select runs, then Compare)", flush=True)
        print("Ctrl-C stops both.", flush=True)
        while not stopping and all(p.poll() is None for _, p in servers):
            time.sleep(0.5)
        if stopping:
            return 0
        name, dead = next((n, p) for n, p in servers if p.poll() is not None)
        print(f"error: the {name} UI exited with code {dead.returncode}; stopping the other", file=sys.stderr,
              flush=True)
        return 1
    finally:
        for s in handled:  # a second Ctrl-C must not interrupt the clean-up
            signal.signal(s, signal.SIG_IGN)
        try:
            stop([p for _, p in servers])
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if stopping:
            print("stopped both UIs", flush=True)
