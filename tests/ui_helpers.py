"""Starting `chameleon ui` over a project, and Chromium for the browser tests."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
OUTPUT = Path(os.environ.get("CHAMELEON_TEST_OUTPUT", REPO / "tests" / "output")) / "ui"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all sockets held open until every port is known)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def chromium() -> str:
    """Path of the system Chromium, installed with apt-get when missing (as root).

    Skips, saying why, on a machine where it is missing and cannot be installed: the
    browser tests are then reported as skipped, never passed.
    """
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if shutil.which("apt-get") is None:
        pytest.skip("Chromium is not installed and this machine has no apt-get: browser tests cannot run here")
    if os.geteuid() != 0:
        pytest.skip("Chromium is not installed; run `sudo apt-get install -y chromium` to run the browser tests")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    # pytest-xdist workers may get here together: one installs, the others wait and find it.
    with open(Path(tempfile.gettempdir()) / "chameleon-chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if shutil.which("chromium") is None and subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(f"apt-get install chromium failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    path = shutil.which("chromium")
    assert path, "apt-get installed chromium but it is not on PATH"
    return path


class UI:
    """A running `chameleon ui` (its log in ``log``); ``stop`` sends a signal and waits."""

    def __init__(self, env: dict, log: Path, timeout: float = 300) -> None:
        self.dagster_port, self.mlflow_port = free_ports(2)
        self.log = log
        self._fh = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chameleon_assets.cli", "ui", "--dagster-port", str(self.dagster_port),
             "--mlflow-port", str(self.mlflow_port)], env=env, stdout=self._fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=REPO)
        t0 = time.monotonic()
        while True:
            text = log.read_text(errors="replace")
            lines = [ln for ln in text.splitlines() if ln.startswith(("Dagster UI:", "MLflow UI:"))]
            if len(lines) == 2:
                break
            if self.proc.poll() is not None:
                self._fh.close()
                raise AssertionError(f"`chameleon ui` exited with {self.proc.returncode}:\n{text[-3000:]}")
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise AssertionError(f"`chameleon ui` printed no URLs within {timeout}s:\n{text[-3000:]}")
            time.sleep(0.5)
        self.servers = [c.pid for c in psutil.Process(self.proc.pid).children()]  # their sessions' ids
        self.dagster_url = lines[0].split()[2]
        self.mlflow_url = lines[1].split()[2]
        self.dagster = f"http://127.0.0.1:{self.dagster_port}"
        self.mlflow = f"http://127.0.0.1:{self.mlflow_port}"

    def stop(self, signum: int = 15, timeout: float = 30) -> float:
        """Send ``signum``; return the seconds until the process exited."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        took = time.monotonic() - t0
        for pid in getattr(self, "servers", []):  # whatever a failed stop left behind
            try:
                os.killpg(pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
        self._fh.close()
        return took

    def leftovers(self) -> list:
        """Processes still alive in the servers' sessions or below them."""
        from chameleon_assets.ui import family

        return [p for p in family(self.servers) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
