"""The code location loads as a whole, as `dagster dev -w workspace.yaml` would load it."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]


def test_definitions_are_loadable_and_resolve_every_asset() -> None:
    from chameleon_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"domain_corpus", "proxy_model", "mixture_weights", "base_model", "mixture_comparison",
            "config_mixing", "domain_registry"} <= keys


def test_loading_reads_no_configuration_and_imports_nothing_heavy(tmp_path: Path) -> None:
    # A configuration folder that does not exist: loading must not notice.
    code = (
        "import sys, chameleon_assets.definitions as d\n"
        "heavy = [m for m in ('torch', 'transformers', 'lm_eval', 'mlflow', 'pandas', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy) or 'none')\n"
    )
    env = {"CHAMELEON_CONF_DIR": str(tmp_path / "nowhere"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "none"


def test_every_asset_explains_itself_and_groups_read_as_the_method() -> None:
    """What the lineage shows a person: each asset's description says what it is and its
    rule (a formula or a data-version rule), and the groups are the method's stages."""
    from chameleon_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    groups = set()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        description = node.description or ""
        assert len(description) >= 60, f"{key.to_user_string()}: description too short: {description!r}"
        groups.add(node.group_name)
    assert groups == {"config", "corpus", "mixing", "methods", "models", "evaluation", "finetune"}
    weights = graph.get(dg.AssetKey("mixture_weights")).description
    assert "tau_i = [K_c (K_c + lambda k I)^-1]_ii" in weights and "softmax" in weights
