"""The lost-worker sensor's two judgements, without a daemon: whether a pid is a live
process, and which runs have a worker pid at all (the PostgreSQL test kills a real one:
tests/test_team_instance.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dagster as dg

from chameleon_assets.defs.sensors import process_alive, run_worker_pid


def test_a_running_process_is_alive_and_an_exited_one_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_alive(os.getpid())
        assert process_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid)


def test_a_killed_child_not_yet_reaped_is_not_alive() -> None:
    """A SIGKILLed run worker stays a zombie until the code server reaps it: os.kill(pid, 0)
    still succeeds on it, the sensor must not."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    child.kill()
    deadline = time.monotonic() + 10
    while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(child.pid, 0)  # what a bare liveness check sees: the pid exists
    assert not process_alive(child.pid)
    child.wait()


def test_a_run_executed_in_process_records_no_worker_pid() -> None:
    """``chameleon run`` executes in its own process, which records no worker: the sensor leaves it alone."""
    @dg.asset
    def one() -> int:
        return 1

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([one], instance=instance)
    assert result.success
    assert run_worker_pid(instance, result.run_id) is None
