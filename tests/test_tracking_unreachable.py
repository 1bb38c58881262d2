"""An MLflow tracking URI that does not answer fails in bounded time, naming the URI."""

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from chameleon_assets.defs.tracking import MLflowTracking, TrackingUnreachable, bound_mlflow_http

MLFLOW_HTTP_VARS = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


@pytest.fixture
def clean_env(project: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy and none of MLflow's HTTP settings; monkeypatch restores whatever was there."""
    for var in (*MLFLOW_HTTP_VARS, "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on leaving: nothing listens there


class _Server:
    """A loopback server that accepts connections and never answers them, except, with
    ``health=True``, a ``GET /health`` (so the probe passes and MLflow's own calls hang)."""

    def __init__(self, health: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.health = health
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.uri = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)
            if self.health:
                conn.settimeout(2)
                try:
                    request = conn.recv(4096)
                except OSError:
                    continue
                if request.startswith(b"GET /health "):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
                    conn.close()

    def __enter__(self) -> "_Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        for c in self.held:
            c.close()
        self.sock.close()


def test_a_closed_port_fails_fast_naming_the_uri(clean_env: pytest.MonkeyPatch, project: Path) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    clean_env.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    with pytest.raises(TrackingUnreachable) as exc:
        with MLflowTracking().start_run(run_name="never"):
            pytest.fail("the run must not start")
    assert time.monotonic() - start < 5
    msg = str(exc.value)
    assert msg.startswith(f"MLflow tracking server {uri} did not answer within 10s (connection refused)")
    assert "unset MLFLOW_TRACKING_URI" in msg and str(project / "data" / "mlflow" / "mlflow.db") in msg


def test_a_server_that_never_answers_fails_within_the_timeout(clean_env: pytest.MonkeyPatch) -> None:
    with _Server() as server:
        tracking = MLflowTracking(tracking_uri=server.uri, timeout_s=2)
        start = time.monotonic()
        with pytest.raises(TrackingUnreachable, match=rf"^MLflow tracking server {server.uri} did not answer "
                                                       r"within 2s \(no answer\); start it, or unset the "):
            with tracking.start_run(run_name="never"):
                pytest.fail("the run must not start")
        elapsed = time.monotonic() - start
        with pytest.raises(TrackingUnreachable, match=server.uri):
            tracking.log_series("some-run", "loss", [1.0])
    assert 1.5 < elapsed < 30


def test_a_server_that_stops_answering_after_the_probe_fails_in_bounded_time(clean_env: pytest.MonkeyPatch) -> None:
    """MLflow's own retries (minutes by default) are bounded too."""
    with _Server(health=True) as server:
        start = time.monotonic()
        with pytest.raises(Exception) as exc:
            MLflowTracking(tracking_uri=server.uri, timeout_s=1)._ensure_experiment()
        elapsed = time.monotonic() - start
    assert not isinstance(exc.value, TrackingUnreachable)  # the probe passed; MLflow's call timed out
    assert f"API request to {server.uri}/api/" in str(exc.value)
    assert elapsed < 30
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "1" and os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"


def test_mlflow_http_settings_the_user_chose_are_kept(clean_env: pytest.MonkeyPatch) -> None:
    bound_mlflow_http(10)
    assert [os.environ[v] for v in MLFLOW_HTTP_VARS] == ["10", "2", "1"]
    bound_mlflow_http(2.5)  # values this module set itself follow the resource's timeout
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
    clean_env.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    clean_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    bound_mlflow_http(10)
    assert [os.environ[v] for v in MLFLOW_HTTP_VARS] == ["300", "7", "1"]


def test_the_local_sqlite_store_is_not_probed_nor_changed(clean_env: pytest.MonkeyPatch, project: Path) -> None:
    start = time.monotonic()
    with MLflowTracking(timeout_s=0.001).start_run(run_name="local") as run:
        assert run.info.run_id
    assert time.monotonic() - start < 30
    assert not any(v in os.environ for v in MLFLOW_HTTP_VARS)
