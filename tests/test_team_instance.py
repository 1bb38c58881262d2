"""The team instance (conf/instance/postgres.yaml) against a real PostgreSQL server (issue 32).

One throwaway server per worker (module fixture ``pg``), installed from Debian's package when
missing and run as an unprivileged user; the tests skip, saying why, where that cannot be done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest

from tests.conftest import REPO, make_project, write_domain
from tests.pg_server import PgServer, ensure_installed

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("postgres")]

TEAM_YAML = REPO / "conf" / "instance" / "postgres.yaml"
DOMAINS = ("alpha", "beta", "gamma")
KEYS = ("domain_corpus", "domain_embeddings", "proxy_model", "affinity_matrix", "mixture_weights")


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


def _team_project(root: Path, raw: Path, monkeypatch: pytest.MonkeyPatch, pg: PgServer | None, db: str) -> Path:
    """A tiny project whose registry reads ``raw``; on ``pg`` (Dagster and MLflow) when given, else SQLite."""
    project = make_project(root, monkeypatch)
    lines = ["domains:"] + [f"  - {{name: {d}, source: {raw / d / 'documents.jsonl'}}}" for d in DOMAINS]
    (project / "conf" / "domains.yaml").write_text("\n".join(lines) + "\n")
    if pg is None:
        monkeypatch.delenv("CHAMELEON_INSTANCE", raising=False)
        return project
    pg.createdb(db)
    pg.createdb(db + "_mlflow")
    for k, v in pg.env(db).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CHAMELEON_INSTANCE", str(TEAM_YAML))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pg.url(db + "_mlflow"))
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


def test_tiny_graph_on_postgres_has_the_data_versions_of_sqlite(pg: PgServer, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster_postgres import PostgresEventLogStorage

    from chameleon_assets.runner import get_instance, sync

    raw = tmp_path / "raw"
    for d in DOMAINS:
        write_domain(raw, d)

    _team_project(tmp_path / "lite", raw, monkeypatch, None, "")
    lite = get_instance()
    assert not isinstance(lite.event_log_storage, PostgresEventLogStorage)
    sync(instance=lite)
    expected = _data_versions(lite)

    _team_project(tmp_path / "team", raw, monkeypatch, pg, "e2e")
    team = get_instance()
    assert isinstance(team.event_log_storage, PostgresEventLogStorage)
    assert (tmp_path / "team" / "dagster_home" / "dagster.yaml").read_text() == TEAM_YAML.read_text()
    assert not list((tmp_path / "team" / "dagster_home").rglob("*.db"))  # nothing on SQLite
    sync(instance=team)
    got = _data_versions(team)
    assert {k for k, _ in got} == set(KEYS)
    assert got == expected

    # MLflow on the server too: a trained model's run lands in the PostgreSQL backend store,
    # its artefacts under the data directory (the shared volume), none in the SQLite default.
    import mlflow

    from chameleon_assets.defs.models.assets import base_model
    from chameleon_assets.runner import load_defs, materialize

    materialize(load_defs(), team, [base_model], partition_key="uniform|0")
    mlflow.set_tracking_uri(pg.url("e2e_mlflow"))
    runs = mlflow.search_runs(experiment_names=["chameleon"], filter_string="tags.asset_partition = 'uniform|0'")
    assert len(runs) == 1
    artifacts = Path(mlflow.get_experiment_by_name("chameleon").artifact_location.removeprefix("file://"))
    assert artifacts == tmp_path / "team" / "data" / "mlflow" / "artifacts"
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(runs.iloc[0]["run_id"])}
    assert {"weights.csv", "README.md"} <= logged
    assert not (tmp_path / "team" / "data" / "mlflow" / "mlflow.db").exists()


def _materialised(instance: dg.DagsterInstance) -> dict[str, list[str]]:
    return {k: sorted(r.partition_key or "" for r in
                      instance.fetch_materializations(dg.AssetKey(k), limit=10_000).records) for k in KEYS}


def _diff(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per asset, the materialisations in ``after`` beyond those in ``before``."""
    diff = {}
    for k, partitions in after.items():
        rest = list(partitions)
        for p in before[k]:
            rest.remove(p)
        diff[k] = rest
    return diff


def test_daemon_alone_materialises_an_added_domain(pg: PgServer, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """dagster-daemon, with no CLI, runs the registry sensor and the automation: the added
    domain's partitions and the weights, nothing else."""
    import os
    import subprocess
    import sys
    import time

    from chameleon_assets.runner import get_instance, sync

    raw = tmp_path / "raw"
    for d in (*DOMAINS, "delta"):
        write_domain(raw, d)
    project = _team_project(tmp_path / "team", raw, monkeypatch, pg, "daemon")
    instance = get_instance()
    sync(instance=instance)
    before = _materialised(instance)
    registry = project / "conf" / "domains.yaml"
    registry.write_text(registry.read_text() + f"  - {{name: delta, source: {raw / 'delta' / 'documents.jsonl'}}}\n")

    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                               str(REPO / "workspace.yaml")], cwd=REPO, env=dict(os.environ),
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    expected = {"domain_corpus": ["delta"], "domain_embeddings": ["delta"], "proxy_model": [],
                "affinity_matrix": [""], "mixture_weights": [""]}
    try:
        deadline = time.monotonic() + 480
        while time.monotonic() < deadline and _diff(before, _materialised(instance)) != expected:
            time.sleep(3)
        time.sleep(35)  # one more automation tick: nothing further is requested
    finally:
        daemon.terminate()
        daemon.wait(30)
        log.close()
    assert _diff(before, _materialised(instance)) == expected, (tmp_path / "daemon.log").read_text()[-3000:]
