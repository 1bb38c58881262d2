"""The UIs used as a person uses them: `chameleon ui` starts and stops cleanly, and the
Dagster lineage, weights, materialise button and MLflow comparison work in a real
(headless) Chromium, over a project materialised with the tiny profile.

Screenshots go to ``tests/output/ui/`` (``$CHAMELEON_TEST_OUTPUT``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_PROFILE, write_domain
from tests.ui_helpers import OUTPUT, UI, chromium

# One xdist worker runs this whole file: its module-scoped fixture is built once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui")]

DOMAINS = ["alpha", "beta", "gamma"]
MIXTURES = ["uniform", "chameleon_pretrain"]
SEEDS = [0, 1]
GROUPS = {
    "corpus": ["domain_corpus"],
    "mixing": ["proxy_model", "domain_embeddings", "affinity_matrix", "mixture_weights", "weight_diagnostics",
               "mixture_table"],
    "methods": ["doremi_weights", "doge_weights", "regmix_run", "regmix_weights", "olmix_weights", "olmix_reuse_run",
                "olmix_reuse_weights"],
    "models": ["base_model"],
    "evaluation": ["evaluation", "mixture_comparison"],
    "finetune": ["finetune_corpus", "finetune_embeddings", "finetune_affinity", "finetune_weights",
                 "finetune_diagnostics", "finetuned_model", "finetune_evaluation", "finetune_comparison"],
}


def _project(root: Path, materialise: bool) -> dict:
    """conf/, raw domains and (optionally) everything materialised; returns the environment."""
    conf = root / "conf"
    (conf / "profiles").mkdir(parents=True)
    (conf / "mixtures.yaml").write_text((REPO / "conf" / "mixtures.yaml").read_text())
    tiny = TINY_PROFILE.replace("tasks: [arc_easy_local]", "tasks: []").replace("seed: 0\n", f"seed: 0\nseeds: {SEEDS}\n")
    (conf / "profiles" / "tiny.yaml").write_text(tiny)
    lines = ["domains:"]
    for d in DOMAINS:
        lines.append(f"  - {{name: {d}, source: {write_domain(root / 'raw', d)}}}")
    (conf / "domains.yaml").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "CHAMELEON_CONF_DIR": str(conf), "CHAMELEON_DATA_DIR": str(root / "data"),
           "DAGSTER_HOME": str(root / "dagster_home"), "CHAMELEON_PROFILE": "tiny",
           "CHAMELEON_REGISTRY": str(conf / "domains.yaml"), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if materialise:
        done = subprocess.run([sys.executable, "-m", "chameleon_assets.cli", "run", "--mixtures", *MIXTURES],
                              env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return env


# --- `make ui` behaves -------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_ui_prints_working_urls_and_stops_everything_it_started(tmp_path: Path, signum: int) -> None:
    import psutil

    ui = UI(_project(tmp_path, materialise=False), tmp_path / "ui.log")
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/#/experiments/\d+/runs\?workflowType=machine_learning",
                            ui.mlflow_url), ui.mlflow_url
        for url in (ui.dagster_url, f"{ui.mlflow}/health"):
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
        # What the webserver itself says its first visitor sees: no community dialog.
        request = urllib.request.Request(f"{ui.dagster}/graphql", data=b'{"query": "{ shouldShowNux }"}',
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response) == {"data": {"shouldShowNux": False}}
        assert len(ui.servers) == 2
        assert len(ui.leftovers()) >= 5  # MLflow and its workers, dagster dev, webserver, daemon, code server
    finally:
        took = ui.stop(signum)
    assert took < 10, f"took {took:.1f}s to stop"
    assert ui.proc.returncode == 0
    data = str(tmp_path / "data")
    strays = [p for p in psutil.process_iter(["environ"])
              if (p.info["environ"] or {}).get("CHAMELEON_DATA_DIR") == data and p.pid != os.getpid()]
    assert ui.leftovers() == [] and strays == [], [p.cmdline()[:4] for p in ui.leftovers() + strays]
    assert "stopped both UIs" in ui.log.read_text()


# --- In the browser ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory, browser):  # noqa: ANN001, ANN201 (browser first: it may skip)
    root = tmp_path_factory.mktemp("ui")
    env = _project(root, materialise=True)
    ui = UI(env, root / "ui.log")
    try:
        yield ui, env
    finally:
        ui.stop()


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    from playwright.sync_api import sync_playwright

    path = chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, request):  # noqa: ANN001, ANN201
    pg = browser.new_page(viewport={"width": 1600, "height": 1000})
    pg.set_default_timeout(30_000)
    yield pg
    OUTPUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(OUTPUT / f"{request.node.name}.png"), full_page=False)
    pg.close()


def _shot(pg, name: str) -> None:  # noqa: ANN001
    OUTPUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(OUTPUT / f"{name}.png"))


def _open(pg, url: str) -> None:  # noqa: ANN001
    """Open a Dagster page (the instance turns the first-visit community dialog off)."""
    pg.goto(url)


@pytest.mark.browser
def test_the_lineage_shows_every_asset_and_a_partition_per_domain(served, page) -> None:  # noqa: ANN001
    ui, _ = served
    _open(page, f"{ui.dagster}/asset-groups")
    page.get_by_text("Global asset lineage").wait_for()
    for group in ("mixing", "finetune"):
        page.get_by_text(group, exact=True).last.wait_for()  # the collapsed groups are drawn
    # One group at a time: the whole graph expanded is drawn too small for its labels (and
    # long names are shortened in the graph, so the names are read from the group's list).
    for group, assets in GROUPS.items():
        _open(page, f"{ui.dagster}/locations/chameleon_assets/asset-groups/{group}")
        # The group's lineage is drawn. The graph draws only the nodes inside the viewport (and a
        # group of many assets is larger than it), so any one of its assets will do.
        drawn = re.compile("|".join(re.escape(a[:6]) for a in assets))
        page.get_by_text(drawn).first.wait_for(state="visible")
        if group in ("mixing", "finetune", "methods"):
            page.wait_for_timeout(1000)
            _shot(page, "lineage" if group == "mixing" else f"lineage_{group}")
        page.get_by_role("tab", name="List").click()
        for asset in assets:  # a long name is drawn shortened; its full text is in the row
            page.get_by_text(asset, exact=True).first.wait_for(state="attached")
    _open(page, f"{ui.dagster}/assets/domain_embeddings?view=partitions")
    page.get_by_text(f"Materialized ({len(DOMAINS)})").wait_for()
    for d in DOMAINS:
        assert page.get_by_text(d, exact=True).count() >= 1, d


@pytest.mark.browser
def test_the_weights_page_shows_table_chart_and_where_they_came_from(served, page) -> None:  # noqa: ANN001
    ui, _ = served
    _open(page, f"{ui.dagster}/assets/mixture_weights")
    page.get_by_text("KRLS tau_i").first.wait_for()  # the description states the rule
    weights = page.locator("tr", has=page.locator("td", has_text=re.compile(r"^weights$")))
    weights.first.wait_for()
    row = weights.first.inner_text()
    for name in ("uniform", "chameleon_pretrain", "chameleon_finetune", *DOMAINS):
        assert name in row, name
    assert re.search(r"0\.3333", row)  # uniform over three domains
    derived = page.locator("tr", has=page.locator("td", has_text=re.compile(r"^derived_from$"))).first.inner_text()
    for d in DOMAINS:
        assert d in derived
    _shot(page, "weights")
    # Images are too long for Dagster to inline (over 1,000 characters): one click shows them.
    page.locator("tr", has=page.locator("td", has_text=re.compile(r"^bar_chart$"))).first.get_by_text(
        "[Show Markdown]").click()
    chart = page.get_by_role("dialog").locator("img[alt='mixture weights']")
    chart.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=chart.element_handle())
    page.wait_for_timeout(800)  # the dialog's fade-in
    _shot(page, "weights_chart")
    page.keyboard.press("Escape")

    _open(page, f"{ui.dagster}/assets/mixture_weights?view=lineage&lineageScope=upstream&lineageDepth=6")
    for upstream in ("affinity_matrix", "domain_embeddings", "proxy_model", "domain_corpus", "domain_source"):
        page.get_by_text(upstream, exact=True).last.wait_for(state="visible")
    _shot(page, "weights_lineage")


@pytest.mark.browser
def test_materialising_one_domain_partition_from_the_ui(served, page) -> None:  # noqa: ANN001
    import dagster as dg

    ui, env = served
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    key = dg.AssetKey("domain_corpus")

    def count(partition: str) -> int:
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]),
                                                  limit=100).records
        return len(records)

    before = {d: count(d) for d in DOMAINS}
    runs_before = {r.run_id for r in instance.get_runs()}
    _open(page, f"{ui.dagster}/assets/domain_corpus")
    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Select a partition or create one").click()
    page.keyboard.type("beta")
    page.get_by_role("checkbox", name="beta").or_(page.locator("label:has-text('beta')")).first.click()
    page.keyboard.press("Escape")
    launch = dialog.get_by_role("button", name="Launch 1 run")
    launch.wait_for()
    _shot(page, "materialise_dialog")
    launch.click()
    t0 = time.monotonic()
    while True:
        new = [r for r in instance.get_runs() if r.run_id not in runs_before]
        if new and new[0].status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
            break
        assert time.monotonic() - t0 < 180, "the launched run did not finish within 180 s"
        time.sleep(1)
    assert len(new) == 1 and new[0].tags.get("dagster/partition") == "beta"
    assert new[0].status == dg.DagsterRunStatus.SUCCESS
    assert {d: count(d) for d in DOMAINS} == {**before, "beta": before["beta"] + 1}
    instance.dispose()
    _open(page, f"{ui.dagster}/assets/domain_corpus?view=events&partition=beta")
    page.get_by_text("beta").first.wait_for()


@pytest.mark.browser
def test_mlflow_lists_one_run_per_model_and_compares_them(served, page) -> None:  # noqa: ANN001
    from mlflow.tracking import MlflowClient

    ui, env = served
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("chameleon").experiment_id
    parents = {r.data.tags["mixture"]: r.info.run_id for r in client.search_runs([experiment], "tags.kind = 'mixture'")}
    assert sorted(parents) == sorted(MIXTURES)
    models = [r for r in client.search_runs([experiment], "tags.stage = 'pretrain'") if "asset_partition" in r.data.tags]
    assert sorted(r.data.tags["asset_partition"] for r in models) == sorted(f"{m}|{s}" for m in MIXTURES for s in SEEDS)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[r.data.params["mixture"]] for r in models)
    assert all(client.get_run(p).data.metrics["seeds"] == len(SEEDS) for p in parents.values())  # the aggregates

    page.goto(ui.mlflow_url)  # as printed by `chameleon ui`: the runs table, model-training view
    for m in MIXTURES:  # one parent row per mixture; its "+" shows the seeds' runs
        parent = page.locator("div[role=row]", has=page.get_by_text(m, exact=True)).first
        parent.wait_for()
        parent.locator("div[role=gridcell] button").first.click()
        for seed in SEEDS:
            page.get_by_text(f"base_model[{m}|{seed}]").first.wait_for()
    _shot(page, "mlflow_runs")
    for m in MIXTURES:  # tick seed 0 of both mixtures, then Compare
        row = page.locator("div[role=row]", has=page.get_by_text(f"base_model[{m}|0]", exact=True))
        row.locator("input[type=checkbox]").first.check()
    page.get_by_role("button", name="Compare").first.click()
    page.get_by_text(f"weight.{DOMAINS[0]}").first.wait_for(timeout=60_000)
    body = page.inner_text("body")
    for d in DOMAINS:
        assert f"weight.{d}" in body and f"ppl.{d}" in body, d
    assert "ppl_avg" in body and "bpb_avg" in body
    _shot(page, "mlflow_compare")



@pytest.mark.browser
def test_the_comparison_page_shows_intervals_and_the_bits_per_byte_plot(served, page) -> None:  # noqa: ANN001
    ui, _ = served
    _open(page, f"{ui.dagster}/assets/mixture_comparison")
    page.get_by_text("95% interval over seeds").first.wait_for()  # the description states the rule
    table = page.locator("tr", has=page.locator("td", has_text=re.compile(r"^table$"))).first.inner_text()
    assert "bpb, mean over domains [95% CI]" in table and "(baseline)" in table
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", table)  # two seeds: a mean with its interval
    _shot(page, "comparison")
    page.locator("tr", has=page.locator("td", has_text=re.compile(r"^plot$"))).first.get_by_text(
        "[Show Markdown]").click()
    plot = page.get_by_role("dialog").locator("img[alt='bits per byte per domain']")
    plot.wait_for()
    assert plot.evaluate("img => img.naturalWidth") > 300
    page.wait_for_timeout(600)  # the dialog fades in
    _shot(page, "comparison_plot")
