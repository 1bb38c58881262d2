"""The code location loads as a whole, as `dagster dev -w workspace.yaml` would load it."""

import dagster as dg


def test_definitions_load_and_resolve_every_asset() -> None:
    from chameleon_assets.definitions import defs

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert "domain_corpus" in keys
    assert isinstance(defs, dg.Definitions)
