"""The asset catalogue, read from the code location (``chameleon_assets.definitions``)
through Dagster's public API: every asset with its group, partitions, inputs, the rule
that recomputes it and the first paragraph of its description, and every asset check."""

from __future__ import annotations

import functools
import warnings
from typing import Any

from docgen.text import table

# The order the groups are read in: the method's stages.
GROUP_ORDER = ("config", "corpus", "mixing", "methods", "models", "evaluation", "finetune")


@functools.cache
def _defs() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dagster's beta warnings on import
        from chameleon_assets.definitions import defs
    return defs


@functools.cache
def _specs() -> tuple[tuple[Any, bool], ...]:
    """Every asset's spec, and whether it is an observable source."""
    defs = _defs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dagster's own deprecation warnings when it converts source assets
        return tuple((spec, defs.resolve_assets_def(spec.key).is_observable) for spec in defs.resolve_all_asset_specs())


def partitions_text(partitions_def: Any) -> str:
    """``domain``; ``mixture x seed``; "" when unpartitioned."""
    if partitions_def is None:
        return ""
    inner = getattr(partitions_def, "partitions_defs", None)
    if inner:
        return " x ".join(f"`{d.name}`" for d in inner)
    return f"`{getattr(partitions_def, 'name', None) or type(partitions_def).__name__}`"


def policy_text(spec: Any, observable: bool) -> str:
    """What recomputes the asset: its automation condition's label, else how it is made."""
    if observable:
        return "observed"
    condition = spec.automation_condition
    if condition is None:
        return "on request"
    return condition.get_label() or "automated (condition without a label)"


def first_paragraph(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


def ordered_specs() -> list[Any]:
    """Every asset, each after its inputs (groups in ``GROUP_ORDER``, then by name)."""
    specs = {s.key: s for s, _ in _specs()}
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    placed, out = set(), []
    pending = sorted(specs.values(), key=lambda s: (rank.get(s.group_name, len(rank)), s.key.to_user_string()))
    while pending:
        for spec in pending:
            if all(d.asset_key in placed or d.asset_key not in specs for d in spec.deps):
                placed.add(spec.key)
                out.append(spec)
                pending.remove(spec)
                break
        else:  # a cycle cannot load in Dagster; keep the rest in order all the same
            out += pending
            break
    return out


def asset_catalogue() -> str:
    """One table per asset group, in the order of the method."""
    observable_keys = {s.key for s, observable in _specs() if observable}
    by_group: dict[str, list[tuple]] = {}
    for spec in ordered_specs():
        observable = spec.key in observable_keys
        inputs = ", ".join(f"`{d.asset_key.to_user_string()}`" for d in spec.deps)
        by_group.setdefault(spec.group_name or "default", []).append(
            (f"`{spec.key.to_user_string()}`", partitions_text(spec.partitions_def), inputs,
             policy_text(spec, observable), first_paragraph(spec.description)))
    groups = sorted(by_group, key=lambda g: GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER))
    return "\n\n".join(
        f"### `{group}` {{#group-{group}}}\n\n"
        + table(["asset", "partitioned by", "inputs", "recomputed", "what it is"], by_group[group])
        for group in groups)


def asset_checks() -> str:
    """Every asset check: name, the assets it guards, what it asserts."""
    rows: dict[str, list] = {}
    for checks_def in _defs().asset_checks or []:
        for spec in checks_def.check_specs:
            row = rows.setdefault(spec.name, [spec.name, [], first_paragraph(spec.description)])
            row[1].append(spec.asset_key.to_user_string())
    return table(["check", "on", "what it asserts"],
                 [(f"`{name}`", ", ".join(f"`{a}`" for a in assets), what) for name, assets, what in rows.values()])


def group_names() -> str:
    """The asset groups, in the order of the method (for prose that lists them)."""
    groups = {s.group_name for s, _ in _specs()}
    return ", ".join(f"`{g}`" for g in sorted(groups, key=lambda g: GROUP_ORDER.index(g)
                                                 if g in GROUP_ORDER else len(GROUP_ORDER)))

