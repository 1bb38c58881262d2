"""The team instance (conf/instance/postgres.yaml) against a real PostgreSQL server (issue 32).

One throwaway server per module (fixture ``pg``), installed from Debian's package when
missing and run as an unprivileged user; the tests skip, saying why, where that cannot be
done. The tiny project is materialised on it once (``team``), and one ``dagster-daemon``
(``daemon``) serves every test that needs it, with the sensors evaluated every second
(``CHAMELEON_SENSOR_INTERVAL``) so that a test waits seconds, not the 30 s default.
Each daemon test adds domains of its own to the same project, so nothing depends on order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg
import pytest

from tests.conftest import REPO, make_project, materialised, new_materialisations, write_domain
from tests.pg_server import PgServer, ensure_installed

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("postgres")]

TEAM_YAML = REPO / "conf" / "instance" / "postgres.yaml"
DOMAINS = ("alpha", "beta", "gamma")
KEYS = ("domain_corpus", "domain_embeddings", "proxy_model", "affinity_matrix", "mixture_weights")
# Every variable a project (make_project) and the team instance set: what a test re-applies.
PROJECT_ENV = ("CHAMELEON_CONF_DIR", "CHAMELEON_DATA_DIR", "DAGSTER_HOME", "CHAMELEON_PROFILE", "CHAMELEON_REGISTRY",
               "MLFLOW_TRACKING_URI", "CHAMELEON_INSTANCE", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER",
               "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")
# How long the lost-worker sensor may take to fail a run whose worker died: its interval
# (1 s here), the daemon's 5 s sensor loop, one evaluation on a loaded 2-core machine.
LOST_WORKER_BOUND_S = 30
NEW_TEXT = {"epsilon": "Quarterly revenue grew while operating margins narrowed across every region.",
            "zeta": "The patient presented with a mild fever and a persistent dry cough for a week.",
            "eta": "Bishop to e5 pins the knight; white answers with castling on the queen side."}


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    """A PostgreSQL server on a free loopback port, stopped and removed at the end."""
    bin_dir, why = ensure_installed()
    if bin_dir is None:
        print(f"skipping the PostgreSQL tests: {why}")
        pytest.skip(why)
    server = PgServer.create(bin_dir)
    try:
        yield server
    finally:
        server.destroy()


def _team_project(root: Path, raw: Path, mp: pytest.MonkeyPatch, pg: PgServer | None, db: str) -> Path:
    """A tiny project whose registry reads ``raw``; on ``pg`` (Dagster and MLflow) when given, else SQLite."""
    project = make_project(root, mp)
    lines = ["domains:"] + [f"  - {{name: {d}, source: {raw / d / 'documents.jsonl'}}}" for d in DOMAINS]
    (project / "conf" / "domains.yaml").write_text("\n".join(lines) + "\n")
    if pg is None:
        mp.delenv("CHAMELEON_INSTANCE", raising=False)
        return project
    pg.createdb(db)
    pg.createdb(db + "_mlflow")
    for k, v in pg.env(db).items():
        mp.setenv(k, v)
    mp.setenv("CHAMELEON_INSTANCE", str(TEAM_YAML))
    mp.setenv("MLFLOW_TRACKING_URI", pg.url(db + "_mlflow"))
    return project


def _data_versions(instance: dg.DagsterInstance) -> dict[tuple[str, str], str]:
    """The data version of the latest materialisation of every (asset, partition)."""
    versions = {}
    for key in KEYS:
        records = instance.fetch_materializations(dg.AssetKey(key), limit=10_000, ascending=True).records
        for r in records:
            tags = r.asset_materialization.tags or {}
            versions[(key, r.partition_key or "")] = tags["dagster/data_version"]
    return versions


@dataclass
class Team:
    """The tiny project synced once on ``pg`` (``root``, its ``env``), and what the same sync gave on SQLite."""

    root: Path
    raw: Path
    env: dict[str, str]
    postgres_versions: dict[tuple[str, str], str]
    sqlite_versions: dict[tuple[str, str], str]
    sqlite_storage: str


@pytest.fixture(scope="module")
def team(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Team:
    """Syncs the tiny project on SQLite and on the server; the second is what every test uses."""
    from chameleon_assets.runner import get_instance, sync

    base = tmp_path_factory.mktemp("team")
    raw = base / "raw"
    for d in DOMAINS:
        write_domain(raw, d)
    with pytest.MonkeyPatch.context() as mp:
        _team_project(base / "lite", raw, mp, None, "")
        lite = get_instance()
        sync(instance=lite)
        versions, storage = _data_versions(lite), type(lite.event_log_storage).__name__
        lite.dispose()
    with pytest.MonkeyPatch.context() as mp:
        root = _team_project(base / "team", raw, mp, pg, "team")
        instance = get_instance()
        sync(instance=instance)
        team_versions = _data_versions(instance)
        instance.dispose()
        env = {k: os.environ[k] for k in PROJECT_ENV}
    return Team(root, raw, env, team_versions, versions, storage)


@pytest.fixture
def instance(team: Team, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """The team project's instance, its environment set for this test."""
    from chameleon_assets.runner import get_instance

    for k, v in team.env.items():
        monkeypatch.setenv(k, v)
    inst = get_instance()
    yield inst
    inst.dispose()


def test_tiny_graph_on_postgres_has_the_data_versions_of_sqlite(team: Team, instance: dg.DagsterInstance) -> None:
    from dagster_postgres import PostgresEventLogStorage

    assert team.sqlite_storage != PostgresEventLogStorage.__name__
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert (team.root / "dagster_home" / "dagster.yaml").read_text() == TEAM_YAML.read_text()
    assert not list((team.root / "dagster_home").rglob("*.db"))  # nothing on SQLite
    assert {k for k, _ in team.postgres_versions} == set(KEYS)
    assert team.postgres_versions == team.sqlite_versions


def test_mlflow_runs_land_on_postgres(team: Team, instance: dg.DagsterInstance) -> None:
    """The weights step's MLflow run is in the server's backend store, its artefacts under the
    data directory (the shared volume), nothing in the SQLite default."""
    import mlflow

    record = instance.fetch_materializations(dg.AssetKey("mixture_weights"), limit=1).records[0]
    materialization = record.asset_materialization
    run_id = materialization.metadata["mlflow_run_id"].value
    mlflow.set_tracking_uri(team.env["MLFLOW_TRACKING_URI"])
    run = mlflow.get_run(run_id)
    assert run.data.tags["weights_version"] == materialization.tags["dagster/data_version"]
    artifacts = Path(mlflow.get_experiment_by_name("chameleon").artifact_location.removeprefix("file://"))
    assert artifacts == team.root / "data" / "mlflow" / "artifacts"
    assert {"weights.csv", "weights.json"} <= {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert not (team.root / "data" / "mlflow" / "mlflow.db").exists()


@dataclass
class Daemon:
    """The running ``dagster-daemon`` and its log file."""

    process: subprocess.Popen
    log: Path

    def tail(self) -> str:
        return self.log.read_text()[-4000:]


@pytest.fixture(scope="module")
def daemon(team: Team, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """dagster-daemon on the team project, sensors every second; terminated at the end."""
    log = tmp_path_factory.mktemp("daemon") / "daemon.log"
    env = {**os.environ, **team.env, "CHAMELEON_SENSOR_INTERVAL": "1"}
    with log.open("w") as fh:
        process = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                                    str(REPO / "workspace.yaml")], cwd=REPO, env=env,
                                   stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Daemon(process, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        finally:
            # The code server it started waits for its runs on SIGTERM: end them too.
            os.killpg(process.pid, signal.SIGKILL)


def _add_domains(team: Team, sizes: dict[str, int]) -> None:
    """Write each domain's documents (``sizes``: name -> documents) and append them to the registry."""
    registry = team.root / "conf" / "domains.yaml"
    lines = []
    for name, n_docs in sizes.items():
        write_domain(team.raw, name, n_docs=n_docs, text=NEW_TEXT.get(name))
        lines.append(f"  - {{name: {name}, source: {team.raw / name / 'documents.jsonl'}}}\n")
    registry.write_text(registry.read_text() + "".join(lines))


def _wait(condition: Callable[[], bool], timeout_s: float, daemon: Daemon, what: str) -> float:
    """Poll ``condition`` every half second; the seconds it took, or fail with the daemon's log."""
    start = time.monotonic()
    while not condition():
        if daemon.process.poll() is not None:
            pytest.fail(f"the daemon exited ({daemon.process.returncode}) waiting for {what}:\n{daemon.tail()}")
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"no {what} within {timeout_s} s:\n{daemon.tail()}")
        time.sleep(0.5)
    return time.monotonic() - start


def _active(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """The queued or running runs of the assets of KEYS (the automation goes on to the
    diagnostics and tables after the weights: not waited for)."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED,
                                                             dg.DagsterRunStatus.STARTING,
                                                             dg.DagsterRunStatus.STARTED]))
    keys = {dg.AssetKey(k) for k in KEYS}
    return [r for r in runs if keys & set(r.asset_selection or ())]


def _corpus_runs(instance: dg.DagsterInstance, partition: str) -> list[dg.DagsterRun]:
    """The runs of ``domain_corpus[partition]``, oldest first."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": partition}))
    return sorted((r for r in runs if dg.AssetKey("domain_corpus") in (r.asset_selection or ())),
                  key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp)


@dataclass
class Scenario:
    """What the daemon did after two domains were added at once and one corpus run's worker was killed."""

    new: dict[str, list[str]]            # materialisations beyond those of the sync, per asset
    runs: dict[str, list[dg.DagsterRun]]  # each added domain's domain_corpus runs, oldest first
    killed_run_id: str
    failed_after_s: float                 # from the SIGKILL to the run's FAILURE
    killed_run_materialised: bool
    instance: dg.DagsterInstance


KILLED, KEPT = "delta", "epsilon"


@pytest.fixture(scope="module")
def added_domains(team: Team, daemon: Daemon) -> Iterator[Scenario]:
    """The daemon alone, no CLI: two domains are added to the registry at once; once the
    ``KILLED`` domain's corpus step is launched, its run worker and step process get SIGKILL.
    Waits until no run of KEYS is queued or running and their materialisations stay put."""
    from chameleon_assets.defs.sensors import run_worker_pid
    from chameleon_assets.runner import get_instance

    with pytest.MonkeyPatch.context() as mp:
        for k, v in team.env.items():
            mp.setenv(k, v)
        instance = get_instance()
    before = materialised(instance, KEYS)
    # The killed domain's corpus is larger: a step of seconds, so the kill lands inside it.
    _add_domains(team, {KILLED: 600, KEPT: 12})

    def step_launched() -> bool:
        runs = _corpus_runs(instance, KILLED)
        return bool(runs) and bool(instance.get_records_for_run(
            runs[0].run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTING).records)

    _wait(step_launched, 240, daemon, f"a domain_corpus[{KILLED}] step launched")
    killed = _corpus_runs(instance, KILLED)[0]
    pid = run_worker_pid(instance, killed.run_id)
    assert pid is not None, "the run recorded no worker pid"
    _kill_tree(pid)
    failed_after = _wait(lambda: instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE,
                         LOST_WORKER_BOUND_S, daemon, "the killed run marked failed")
    expected = {"domain_corpus": [KILLED, KEPT], "domain_embeddings": [KILLED, KEPT], "proxy_model": [],
                "affinity_matrix": [""], "mixture_weights": [""]}

    def settled() -> bool:
        return not _active(instance) and new_materialisations(before, materialised(instance, KEYS)) == expected

    _wait(settled, 600, daemon, f"materialisations {expected} and no run active")
    time.sleep(10)  # a few more automation ticks: nothing further may be requested
    assert not _active(instance), daemon.tail()
    killed_materialised = any(r.run_id == killed.run_id for r in
                              instance.fetch_materializations(dg.AssetKey("domain_corpus"), limit=100).records)
    yield Scenario(new_materialisations(before, materialised(instance, KEYS)),
                   {d: _corpus_runs(instance, d) for d in (KILLED, KEPT)}, killed.run_id, failed_after,
                   killed_materialised, instance)
    instance.dispose()


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every process under it (a run worker and its step process)."""
    import psutil

    worker = psutil.Process(pid)
    for p in [worker, *worker.children(recursive=True)]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def test_daemon_alone_materialises_the_added_domains_and_the_weights_once(added_domains: Scenario) -> None:
    """The added domains' corpus and embeddings, one affinity and one weights: nothing else,
    and no proxy (a domain change never retrains it)."""
    assert added_domains.new == {"domain_corpus": [KILLED, KEPT], "domain_embeddings": [KILLED, KEPT],
                                 "proxy_model": [], "affinity_matrix": [""], "mixture_weights": [""]}


def test_two_runs_submitted_at_once_are_queued_and_both_complete(added_domains: Scenario) -> None:
    """One automation tick submits both corpus runs; both go through the queue (QueuedRunCoordinator)."""
    instance = added_domains.instance
    first = {d: runs[0] for d, runs in added_domains.runs.items()}
    for run in first.values():
        assert instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED).records
        assert run.tags["dagster/sensor_name"] == "chameleon_automation"
    ticks = {run.tags.get("dagster/tick") for run in first.values()}
    assert len(ticks) == 1 and None not in ticks, ticks
    assert [r.status for r in added_domains.runs[KEPT]] == [dg.DagsterRunStatus.SUCCESS]


def test_a_killed_run_worker_fails_its_run_and_its_partition_is_redone(added_domains: Scenario) -> None:
    """SIGKILL on a run worker mid-step: the lost-worker sensor fails the run within
    LOST_WORKER_BOUND_S, the run wrote nothing, and the automation's next run materialises it."""
    print(f"killed run marked failed {added_domains.failed_after_s:.1f} s after the SIGKILL")
    assert added_domains.failed_after_s <= LOST_WORKER_BOUND_S
    assert not added_domains.killed_run_materialised
    runs = added_domains.runs[KILLED]
    assert runs[0].run_id == added_domains.killed_run_id
    assert [r.status for r in runs] == [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS]
