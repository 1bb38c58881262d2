"""The mixture comparison: per-seed evaluations -> means, 95% intervals and paired tests.

Input: for each mixture, its evaluations by seed (bits per byte, NLL and perplexity per
domain, few-shot scores per task). Output: one row of numbers per mixture (the CSV) and
two text tables (what the UI and the CLI show):

* ``bpb_avg``, the primary aggregate: for each seed the mean over domains of bits per
  byte, then the mean over seeds with its Student-t 95% interval (``core.stats``);
  ``nll_avg`` likewise (nats per token).
* ``d_bpb_avg``: the paired difference against the baseline mixture (``uniform``) over
  the seeds both have: same seeds, same validation windows, so the seed-to-seed
  variation both share cancels. ``d_bpb_avg_sig`` is 1 when its interval excludes 0.
  Per domain: ``d_bpb.<domain>`` and ``d_bpb.<domain>_sig`` (not corrected for
  multiple comparisons).
* ``ppl_avg_arith``: the arithmetic mean of per-domain perplexities, averaged over
  seeds. Secondary: exp(NLL) is convex, so the mean is dominated by whichever domain a
  mixture starves.
* ``acc.<task>`` (mean over seeds), ``acc.<task>_se`` (lm-eval's standard error of one
  evaluation, averaged over seeds), ``acc.<task>_chance`` and
  ``acc.<task>_within_chance`` (1 when the score is within 1.96 standard errors of
  guessing, ``evaluate.within_chance``).

With one seed there is no interval (NaN bounds) and nothing is marked significant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    from chameleon_assets.core import stats

Z_95 = 1.96


@dataclass
class Comparison:
    """The comparison of mixtures over seeds (see the module docstring for the columns)."""

    rows: dict[str, dict[str, float]]  # mixture -> column -> number
    domains: list[str]
    tasks: list[str]
    baseline: str | None  # the mixture the paired differences are against (None: not evaluated)
    notes: list[str] = field(default_factory=list)


def _value(ev: Any, name: str) -> Any:
    return ev[name] if isinstance(ev, Mapping) else getattr(ev, name)


def compare(
    evaluations: Mapping[str, Mapping[int, Any]],
    weights: Mapping[str, Mapping[str, float]] | None = None,
    baseline: str = "uniform",
    confidence: float = 0.95,
) -> Comparison:
    """Rows of the comparison from ``{mixture: {seed: evaluation}}``.

    An evaluation has ``bits_per_byte``, ``nll`` and ``perplexity`` (``{domain: value}``)
    and ``tasks`` (``{task: {"acc", "acc_stderr", "chance", ...}}``), as attributes or
    keys. Every evaluation must score the same domains. ``weights`` (``{mixture:
    {domain: weight}}``) adds ``w.<domain>`` columns.
    """
    from chameleon_assets.core import stats

    mixtures = [m for m in evaluations if evaluations[m]]
    if not mixtures:
        return Comparison({}, [], [], None)
    domains = sorted(_value(next(iter(evaluations[mixtures[0]].values())), "bits_per_byte"))
    tasks = sorted({t for m in mixtures for ev in evaluations[m].values() for t in _value(ev, "tasks")})
    per_metric = {
        metric: {m: {s: dict(_value(ev, key)) for s, ev in evaluations[m].items()} for m in mixtures}
        for metric, key in (("bpb", "bits_per_byte"), ("nll", "nll"), ("ppl", "perplexity"))
    }
    base = baseline if baseline in mixtures else None
    notes = []
    if base is None:
        notes.append(f"no paired differences: the baseline mixture '{baseline}' has no current evaluation")
    rows: dict[str, dict[str, float]] = {}
    for m in mixtures:
        row: dict[str, float] = {"seeds": float(len(evaluations[m]))}
        if weights and m in weights:
            row.update({f"w.{d}": float(weights[m][d]) for d in domains if d in weights[m]})
        bpb = stats.summarise_mixture(per_metric["bpb"][m], confidence)
        nll = stats.summarise_mixture(per_metric["nll"][m], confidence)
        row.update(interval_columns("bpb_avg", bpb.mean))
        row.update(interval_columns("nll_avg", nll.mean))
        if base is not None and m != base and not set(evaluations[m]) & set(evaluations[base]):
            notes.append(f"{m}: no seed in common with {base} ({sorted(evaluations[m])} vs "
                         f"{sorted(evaluations[base])}), so no paired difference")
        elif base is not None and m != base:
            paired = stats.paired_domain_differences(per_metric["bpb"][m], per_metric["bpb"][base], confidence)
            row.update(_paired("d_bpb_avg", paired.mean))
            row["d_bpb_avg_n"] = float(paired.mean.n)
            if paired.mean.n < len(evaluations[m]):
                notes.append(f"{m}: the paired difference covers the {paired.mean.n} seed(s) it shares with {base} "
                             f"({', '.join(map(str, paired.mean.seeds))}), of its {len(evaluations[m])}")
            for d in domains:
                row.update(_paired(f"d_bpb.{d}", paired.per_domain[d]))
        for d in domains:
            row.update(interval_columns(f"bpb.{d}", bpb.per_domain[d]))
        ppl_means = [float(np.mean(list(per_seed.values()))) for per_seed in per_metric["ppl"][m].values()]
        row["ppl_avg_arith"] = float(np.mean(ppl_means))
        for d in domains:
            row[f"ppl.{d}"] = float(np.mean([per_seed[d] for per_seed in per_metric["ppl"][m].values()]))
        for t in tasks:
            row.update(_task(t, [_value(ev, "tasks").get(t, {}) for ev in evaluations[m].values()]))
        rows[m] = row
    single = [m for m in mixtures if len(evaluations[m]) == 1]
    if single:
        notes.append(f"one seed for {', '.join(single)}: no interval, and no difference can be significant; list more "
                     "`seeds` in the profile (the cpu-study profile trains 4)")
    return Comparison(rows, domains, tasks, base, notes)


def interval_columns(name: str, iv: "stats.Interval") -> dict[str, float]:
    """``{name: mean, name_lo: low, name_hi: high}`` of an interval (the table's column convention)."""
    return {name: iv.mean, f"{name}_lo": iv.low, f"{name}_hi": iv.high}


def _paired(name: str, diff: "stats.PairedDifference") -> dict[str, float]:
    return {name: diff.mean, f"{name}_lo": diff.interval.low, f"{name}_hi": diff.interval.high,
            f"{name}_p": diff.p_value, f"{name}_sig": float(diff.significant)}


def _task(task: str, scores: list[dict]) -> dict[str, float]:
    """Mean accuracy over seeds, lm-eval's standard error, the chance level and the flag."""
    def mean_of(key: str) -> float:
        values = [float(s[key]) for s in scores if isinstance(s.get(key), (int, float))]
        return float(np.mean(values)) if values else float("nan")

    from chameleon_assets.core.evaluate import within_chance

    acc, se, chance, n = mean_of("acc"), mean_of("acc_stderr"), mean_of("chance"), mean_of("n")
    out = {f"acc.{task}": acc, f"acc.{task}_se": se, f"acc.{task}_chance": chance}
    if all(math.isfinite(x) for x in (acc, chance, n)):
        # Each seed scores the same n examples; the mean over seeds is tested as one score.
        out[f"acc.{task}_within_chance"] = float(within_chance(acc, int(n), chance, Z_95))
    return out


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def ci_text(row: dict, name: str, digits: int = 3) -> str:
    """``mean [low, high]`` of a row's interval columns (``mean`` alone without bounds)."""
    lo, hi = row.get(f"{name}_lo", float("nan")), row.get(f"{name}_hi", float("nan"))
    bounds = f" [{_fmt(lo, digits)}, {_fmt(hi, digits)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return _fmt(row.get(name, float("nan")), digits) + bounds


def summary_cells(comp: Comparison) -> dict[str, dict[str, str]]:
    """The headline table as strings: one row per mixture.

    ``*`` marks a paired difference against the baseline whose 95% interval excludes 0;
    ``(chance)`` an accuracy that a guessing model reaches within 1.96 standard errors.
    """
    base = comp.baseline or "baseline"
    cells: dict[str, dict[str, str]] = {}
    for m, row in comp.rows.items():
        c = {"seeds": str(int(row["seeds"])), "bpb, mean over domains [95% CI]": ci_text(row, "bpb_avg")}
        if m == comp.baseline:
            diff = "(baseline)"
        elif "d_bpb_avg" in row:
            diff = ci_text(row, "d_bpb_avg") + ("*" if row.get("d_bpb_avg_sig") == 1.0 else "")
            if row.get("d_bpb_avg_n", row["seeds"]) < row["seeds"]:
                diff += f" ({int(row['d_bpb_avg_n'])} paired seeds)"
        else:
            diff = "n/a"
        c[f"bpb - {base} (paired)"] = diff
        c["nll/token [95% CI]"] = ci_text(row, "nll_avg")
        c["ppl, arithmetic mean (secondary)"] = _fmt(row["ppl_avg_arith"], 1)
        for t in comp.tasks:
            acc, se = row.get(f"acc.{t}", float("nan")), row.get(f"acc.{t}_se", float("nan"))
            text = _fmt(acc) + (f" ± {_fmt(se)}" if math.isfinite(se) else "")
            if row.get(f"acc.{t}_within_chance") == 1.0:
                text += " (chance)"
            c[f"acc {t}"] = text
        cells[m] = c
    return cells


def domain_cells(comp: Comparison) -> dict[str, dict[str, str]]:
    """Per-domain bits per byte as strings: ``mean ±half-width``, then the paired
    difference against the baseline, ``*`` when significant (uncorrected)."""
    cells: dict[str, dict[str, str]] = {}
    for m, row in comp.rows.items():
        c = {}
        for d in comp.domains:
            lo, hi = row.get(f"bpb.{d}_lo", float("nan")), row.get(f"bpb.{d}_hi", float("nan"))
            text = _fmt(row[f"bpb.{d}"])
            if math.isfinite(lo) and math.isfinite(hi):
                text += f" ±{_fmt((hi - lo) / 2)}"
            if f"d_bpb.{d}" in row:
                text += f" ({row[f'd_bpb.{d}']:+.3f}{'*' if row.get(f'd_bpb.{d}_sig') == 1.0 else ''})"
            c[d] = text
        cells[m] = c
    return cells


def markdown(cells: dict[str, dict[str, str]], index_title: str = "mixture") -> str:
    """A markdown table of string cells (rows x columns)."""
    columns = list(dict.fromkeys(c for row in cells.values() for c in row))
    lines = ["| " + " | ".join([index_title, *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    lines += ["| " + " | ".join([name, *(row.get(c, "") for c in columns)]) + " |" for name, row in cells.items()]
    return "\n".join(lines)
