"""Adding a mixing method is adding one module (and its settings in the YAML): nothing else.

A copy of the package gets one new file, ``core/methods/throwaway.py``, holding a
closed-form method and one that trains a proxy. Run through the ``chameleon`` command
(so the copy is what runs), with no other file touched: both are validated from YAML,
computed, trained on as base-model mixtures, compared, and staled by their settings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, TINY_PROFILE, current, write_domain, write_registry

THROWAWAY = '''
"""Two methods that exist only in a test."""

from __future__ import annotations

import numpy as np

from chameleon_assets.core.methods import DomainSet, MethodResult, ProxyRecipe, register
from chameleon_assets.core.schema import PositiveFloat, settings


@register
class InverseSize:
    """p_i proportional to n_i^(-a): the smaller a domain, the more of it."""

    name = "inverse_size"
    needs = frozenset({"tokens"})

    @settings
    class Params:
        a: PositiveFloat = 1.0

    def compute(self, domains: DomainSet, params: Params, proxy=None) -> MethodResult:
        w = domains.train_tokens ** -params.a
        return MethodResult(w / w.sum())


@register
class LossWeighted:
    """One proxy trained on the uniform mixture; p_i proportional to its held-out NLL_i^power."""

    name = "loss_weighted"
    needs = frozenset({"corpora", "proxy"})

    @settings
    class Params:
        power: PositiveFloat = 1.0

    def compute(self, domains: DomainSet, params: Params, proxy: ProxyRecipe | None = None) -> MethodResult:
        from chameleon_assets.core.evaluate import perplexity, validation_windows

        model, _, cost = proxy.train_on(domains.train, dict.fromkeys(domains.names, 1.0), part="proxy")
        nll = np.array([perplexity(model, validation_windows(domains.val[d], 4, proxy.model.context_length), 4,
                                   proxy.torch_device())["nll"] for d in domains.names])
        w = nll ** params.power
        return MethodResult(w / w.sum(), cost, details={"nll": nll.tolist()})
'''


def _chameleon(project: Path, package_root: Path, *argv: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(package_root), "CHAMELEON_CONF_DIR": str(project / "conf"),
           "CHAMELEON_DATA_DIR": str(project / "data"), "DAGSTER_HOME": str(project / "dagster_home"),
           "CHAMELEON_PROFILE": "tiny", "CHAMELEON_REGISTRY": str(project / "conf" / "domains.yaml"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "chameleon_assets.cli", *argv], env=env, cwd=project,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_a_new_method_module_is_validated_computed_compared_and_staled(tmp_path: Path) -> None:
    package_root = tmp_path / "pkg"
    shutil.copytree(REPO / "chameleon_assets", package_root / "chameleon_assets",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (package_root / "chameleon_assets" / "core" / "methods" / "throwaway.py").write_text(THROWAWAY)

    project = tmp_path / "project"
    (project / "conf" / "profiles").mkdir(parents=True)
    (project / "dagster_home").mkdir()
    (project / "conf" / "profiles" / "tiny.yaml").write_text(
        TINY_PROFILE.replace("  mixtures: [uniform, chameleon_pretrain]", "  mixtures: [inverse_size, loss_weighted]")
        + "methods:\n  loss_weighted: {power: 2.0}\n")
    mixtures = project / "conf" / "mixtures.yaml"
    mixtures.write_text("mixtures: [uniform, chameleon_pretrain, inverse_size, loss_weighted]\n"
                        "methods:\n  inverse_size: {a: 2.0}\n")
    for d, n in (("alpha", 8), ("beta", 12), ("gamma", 20)):
        write_domain(project / "raw", d, n_docs=n)
    write_registry(project, ["alpha", "beta", "gamma"])

    printed = _chameleon(project, package_root, "run")
    assert "loss_weighted_weights" in printed and "base_model[inverse_size|0]" in printed

    # computed: the closed-form one in mixture_weights, with the configured a = 2 ...
    table = pd.read_csv(current(project, "weights") / "weights.csv", index_col=0)
    tokens = np.array([json.loads((current(project, "corpus", d) / "meta.json").read_text())["train_tokens"]
                       for d in table.columns])
    expected = tokens ** -2.0 / (tokens ** -2.0).sum()
    np.testing.assert_allclose(table.loc["inverse_size"].to_numpy(), expected, atol=1e-6)  # the csv has 6 decimals
    # ... and the trained one in its own asset, from its proxy's held-out losses squared
    value = json.loads((current(project, "methods/loss_weighted") / "weights.json").read_text())
    nll = np.array(value["details"]["nll"])
    np.testing.assert_allclose(value["weights"], nll ** 2 / (nll ** 2).sum(), rtol=1e-6)
    assert value["cost"]["flops"] > 0

    # compared: both trained a base model, were evaluated and are rows of the comparison
    comparison = pd.read_csv(current(project, "comparison") / "mixture_comparison.csv", index_col=0)
    assert {"inverse_size", "loss_weighted"} <= set(comparison.index)
    assert comparison.loc["inverse_size", "w.gamma"] == pytest.approx(expected[list(table.columns).index("gamma")],
                                                                    abs=1e-6)

    # staled: a new `a` recomputes mixture_weights (sync follows it), a new `power` stales
    # loss_weighted_weights, which trains, so it waits for a run
    mixtures.write_text(mixtures.read_text().replace("{a: 2.0}", "{a: 1.0}"))
    profile = project / "conf" / "profiles" / "tiny.yaml"
    profile.write_text(profile.read_text().replace("{power: 2.0}", "{power: 1.0}"))
    synced = _chameleon(project, package_root, "sync")
    assert "changed sources: " in synced and "config_mixing" in synced and "config_loss_weighted" in synced
    assert "  mixture_weights " in synced
    stale = next(line for line in _chameleon(project, package_root, "sync", "--dry-run").splitlines()
                 if line.startswith("stale now:"))
    # (every base model reads mixture_table, so Dagster marks both; the one whose weights did
    # not change is reused, not retrained, when a run asks for it)
    assert stale == "stale now: base_model[inverse_size|0], base_model[loss_weighted|0], loss_weighted_weights"
    table = pd.read_csv(current(project, "weights") / "weights.csv", index_col=0)
    np.testing.assert_allclose(table.loc["inverse_size"].to_numpy(), 1 / tokens / (1 / tokens).sum(), atol=1e-6)

    # validated from YAML by its own Params, in the one-line form
    mixtures.write_text(mixtures.read_text().replace("{a: 1.0}", "{a: -1.0}"))
    env_root = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "chameleon_assets.cli", "sync"], capture_output=True, text=True,
                          cwd=project, timeout=600,
                          env={**env_root, "PYTHONPATH": str(package_root), "CHAMELEON_CONF_DIR": str(project / "conf"),
                               "CHAMELEON_DATA_DIR": str(project / "data"),
                               "DAGSTER_HOME": str(project / "dagster_home"), "CHAMELEON_PROFILE": "tiny",
                               "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"})
    assert "mixtures.yaml: methods.inverse_size.a: must be greater than 0 (got -1.0)" in proc.stdout + proc.stderr
