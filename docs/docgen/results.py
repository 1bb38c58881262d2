"""Tables of measured numbers, rendered from the files in ``bench/results/``.

Nothing here holds a number: every figure is read from a results file when the site is
built, so a re-measured file changes the docs with it. A file that a page needs and that
is missing fails the build, except ``gpu.json``, which exists only once a GPU run has
been recorded (the page then says so).
"""

from __future__ import annotations

import csv as csv_files
import json as json_files
import re
import statistics
from pathlib import Path
from typing import Any

from docgen import REPO
from docgen.text import table, thousands

RESULTS = REPO / "bench" / "results"


class MissingResult(FileNotFoundError):
    """A page asks for a results file that is not there."""


def results_dir() -> Path:
    return RESULTS


def load(name: str) -> Any:
    path = results_dir() / name
    if not path.is_file():
        raise MissingResult(f"{path} not found (the docs render it; run the benchmark that writes it)")
    return json_files.loads(path.read_text(encoding="utf-8"))


def rows(name: str) -> list[dict[str, str]]:
    """A comparison CSV's rows; the unnamed first column is ``mixture``."""
    path = results_dir() / name
    if not path.is_file():
        raise MissingResult(f"{path} not found")
    with path.open(encoding="utf-8", newline="") as fh:
        return [{("mixture" if k == "" else k): v for k, v in row.items()} for row in csv_files.DictReader(fh)]


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


# --- Comparisons over seeds (cpu_study, cpu_finetune_study) ----------------------------------

def comparison(csv_name: str) -> Any:
    """A recorded comparison CSV as the ``core.compare.Comparison`` it was written from
    (an empty cell is a column the row does not have, as for the baseline's differences)."""
    from chameleon_assets.core import compare

    data = rows(csv_name)
    numbers = {r["mixture"]: {k: float(v) for k, v in r.items() if k != "mixture" and v != ""} for r in data}
    return compare.Comparison(numbers, domains_of(data), tasks_of(data), "uniform" if "uniform" in numbers else None)


def domains_of(data: list[dict]) -> list[str]:
    return [k.removeprefix("bpb.") for k in data[0] if re.fullmatch(r"bpb\.[^_]+", k)]


def tasks_of(data: list[dict]) -> list[str]:
    return [k.removeprefix("acc.") for k in data[0]
            if k.startswith("acc.") and not k.endswith(("_se", "_chance", "_within_chance"))]


def _cells_table(cells: dict[str, dict[str, str]], columns: list[str] | None = None) -> str:
    names = columns or list(dict.fromkeys(c for row in cells.values() for c in row))
    return table(["mixture", *names], [[f"`{m}`", *(row.get(c, "") for c in names)] for m, row in cells.items()])


def study_summary(csv: str, columns: str = "all") -> str:
    """The comparison's summary as ``make run`` prints it (``core.compare.summary_cells``;
    for finetuning, with the start model, the gain and forgetting): per mixture, bits per
    byte averaged over domains with its 95% interval over seeds and the paired difference
    against uniform. ``columns=headline``: only those."""
    comp = comparison(csv)
    if any("start_bpb_avg" in row for row in comp.rows.values()):
        from chameleon_assets.defs.finetune.assets import finetune_summary_cells

        cells = finetune_summary_cells(comp)
    else:
        from chameleon_assets.core.compare import summary_cells

        cells = summary_cells(comp)
    headline = [c for c in next(iter(cells.values())) if c == "seeds" or c.startswith("bpb")]
    return _cells_table(cells, headline if columns == "headline" else None)


def study_domains(csv: str) -> str:
    """Bits per byte per domain as ``make run`` prints it (``core.compare.domain_cells``):
    mean ± 95% half-width over seeds, and the paired difference against uniform (``*``:
    its interval excludes 0, uncorrected for the number of domains)."""
    from chameleon_assets.core.compare import domain_cells

    return _cells_table(domain_cells(comparison(csv)))


def _f(row: dict, key: str) -> float | None:
    value = row.get(key, "")
    return float(value) if value not in ("", None) else None


def study_weights(csv: str, json: str | None = None) -> str:
    """Each compared mixture's weights (``w.<domain>``), and KRLS when the study recorded it."""
    data = rows(csv)
    domains = [k.removeprefix("w.") for k in data[0] if k.startswith("w.")]
    body = [[f"`{r['mixture']}`", *(f"{_f(r, f'w.{d}'):.3f}" for d in domains)] for r in data]
    recorded = (load(json).get("finetune_weights") or {}) if json else {}
    if "krls" in recorded and recorded.get("domains") == domains:
        body.append(["KRLS (normalised)", *(f"{v:.3f}" for v in recorded["krls"])])
    return table(["mixture", *domains], body, ["l", *["r"] * len(domains)])


def study_verdicts(csv: str) -> str:
    """What the comparison supports, one line per mixture: the paired difference against
    uniform, and the domains where the mixture is significantly better or worse."""
    data = rows(csv)
    domains = domains_of(data)
    lines = []
    for r in data:
        d = _f(r, "d_bpb_avg")
        if d is None:
            continue
        significant = _f(r, "d_bpb_avg_sig") == 1
        verdict = ("**worse than uniform**" if d > 0 else "**better than uniform**") if significant \
            else "**not distinguishable from uniform**"
        weights = {dom: _f(r, f"w.{dom}") for dom in domains if _f(r, f"w.{dom}") is not None}
        top = max(weights, key=weights.get) if weights else None
        better = [dom for dom in domains if _f(r, f"d_bpb.{dom}_sig") == 1 and _f(r, f"d_bpb.{dom}") < 0]
        worse = [dom for dom in domains if _f(r, f"d_bpb.{dom}_sig") == 1 and _f(r, f"d_bpb.{dom}") > 0]
        parts = [f"`{r['mixture']}` is {verdict} on mean bits per byte: {d:+.3f}, 95% interval "
                 f"[{_f(r, 'd_bpb_avg_lo'):+.3f}, {_f(r, 'd_bpb_avg_hi'):+.3f}] over "
                 f"{int(_f(r, 'd_bpb_avg_n') or _f(r, 'seeds'))} paired seeds."]
        if top:
            parts.append(f"Its largest weight is on {top} ({weights[top]:.3f}).")
        if better or worse:
            parts.append("Per domain (uncorrected): better on " + (", ".join(better) or "none")
                         + "; worse on " + (", ".join(worse) or "none") + ".")
        lines.append("- " + " ".join(parts))
    tasks = tasks_of(data)
    if tasks:
        scores = [(r["mixture"], t) for r in data for t in tasks if _f(r, f"acc.{t}") is not None]
        above = [f"`{m}` on `{t}`" for m, t in scores if _f(next(x for x in data if x["mixture"] == m),
                                                            f"acc.{t}_within_chance") != 1]
        lines.append(f"- Of the {len(scores)} few-shot accuracies, " + (
            "every one is within chance of guessing: the accuracy columns say nothing about any mixture here."
            if not above else f"{len(above)} differ from chance: {', '.join(above)}."))
    return "\n".join(lines)


def study_timing(json: str) -> str:
    """How long a study profile took, from its record."""
    record = load(json)
    items = [("command", f"`{record['command']}`" if "command" in record else ""),
             ("graph, measured", seconds(record.get("measured_graph_s") or record.get("graph_s"))
              + " s" if record.get("measured_graph_s") or record.get("graph_s") else ""),
             ("estimated on an idle machine", f"{record['estimated_alone_min']} min"
              if "estimated_alone_min" in record else ""),
             ("machine", record.get("machine", "")),
             ("date", record.get("date", ""))]
    steps = record.get("step_s") or {}
    for key, label in (("base_model_alone_each", "one base model, alone (median)"),
                       ("evaluation_each", "one evaluation (median)")):
        if isinstance(steps.get(key), list):
            items.append((label, f"{statistics.median(steps[key]):.1f} s"))
    if "steps_s" in record:
        items += [(f"`{asset}` ({n}), each", spread) for asset, n, spread, _ in step_groups(record["steps_s"])]
    return table(["", ""], [(k, v) for k, v in items if v])


def step_groups(steps: dict[str, float]) -> list[tuple[str, int, str, float]]:
    """``{asset[partition]: s}`` grouped by asset: (asset, partitions, "min-max s", total s),
    the costliest first."""
    groups: dict[str, list[float]] = {}
    for name, s in steps.items():
        groups.setdefault(name.split("[")[0], []).append(float(s))
    out = []
    for asset, values in groups.items():
        lo, hi = min(values), max(values)
        spread = f"{seconds(lo)} s" if lo == hi else f"{seconds(lo)}-{seconds(hi)} s"
        out.append((asset, len(values), spread, sum(values)))
    return sorted(out, key=lambda g: -g[3])


# --- make run --------------------------------------------------------------------------

def _latest(runs: dict[str, dict]) -> tuple[str, dict]:
    return max(runs.items(), key=lambda kv: kv[1].get("date", ""))


def make_run_latest() -> str:
    """The most recent fresh-clone ``make run``: in all, and its parts."""
    label, run = _latest(load("make_run.json")["runs"])
    items = [("`make run` on a fresh clone, installs included", f"{seconds(run['make_run_s'])} s"),
             (f"installs ({run.get('installer', 'uv')})", f"{seconds(run.get('installs_s'))} s"),
             ("default corpus build", f"{seconds(run.get('corpus_s'))} s"),
             ("the asset graph", f"{seconds(run.get('graph_s'))} s"),
             ("`import dagster` on that machine at that time (a gauge of its speed)",
              f"{run.get('import_dagster_s')} s"),
             ("run", f"`{label}`, commit `{run.get('commit', '')}`, {run.get('date', '')}, {run.get('machine', '')}")]
    return table(["", ""], items)


def make_run_steps() -> str:
    """Where the time of the most recent recorded ``make run`` with per-step times went."""
    runs = {k: v for k, v in load("make_run.json")["runs"].items() if "steps_s" in v}
    label, run = _latest(runs)
    body = [(f"`{asset}`", n, spread, f"{seconds(total)} s") for asset, n, spread, total in step_groups(run["steps_s"])]
    return table(["asset", "partitions", "each", "in all"], body, ["l", "r", "r", "r"]) + \
        f"\n\nFrom run `{label}` (commit `{run.get('commit', '')}`) of `bench/results/make_run.json`."


def make_run_history() -> str:
    """Every recorded fresh-clone ``make run``."""
    def spread(steps: dict, prefix: str) -> str:
        values = [v for k, v in steps.items() if k.startswith(prefix)]
        return "" if not values else f"{seconds(min(values))}-{seconds(max(values))}"

    body = []
    for label, run in sorted(load("make_run.json")["runs"].items(), key=lambda kv: kv[1].get("date", "")):
        steps = run.get("steps_s") or run.get("slowest_steps_s") or {}
        body.append((f"`{label}`", run.get("date", ""), _commit(run), run.get("installer", "uv"),
                     seconds(run.get("make_run_s")), seconds(run.get("installs_s")), seconds(run.get("graph_s")),
                     spread(steps, "base_model["), seconds(steps.get("proxy_model")),
                     spread(steps, "finetuned_model["), run.get("import_dagster_s", "")))
    return table(["run", "date", "commit", "installer", "make run s", "installs s", "graph s", "base model s (each)",
                  "proxy s", "finetuned model s (each)", "import dagster s"], body,
                 ["l", "l", "l", "l", "r", "r", "r", "r", "r", "r", "r"])


# --- The other benchmarks ----------------------------------------------------------------

def _commit(run: dict) -> str:
    """The commit a run measured (its first word: some records add how it was measured)."""
    commit = str(run.get("commit", "")).split()
    return f"`{commit[0]}`" if commit else ""


def _machine(run: dict) -> str:
    m = run.get("machine")
    if not isinstance(m, dict):
        return str(m or "")
    parts = [m.get("cpu"), m.get("capability"), None if "native_bf16" not in m else
             ("bf16 in hardware" if m["native_bf16"] else "no bf16 hardware"), f"{m['cpus']} cores" if "cpus" in m else None]
    return ", ".join(p for p in parts if p) or "not recorded"


def train_step() -> str:
    """Our training step against HF ``Trainer`` (same model, batch, data and schedule)."""
    runs = load("train_step.json")["runs"]
    body = [(f"`{label}`", r.get("date", ""), _commit(r), _machine(r), r.get("precision", "not recorded"),
             r.get("ours_loss", "plain"), thousands(r["ours"]["median_tokens_per_s"]),
             thousands(r["hf_trainer"]["median_tokens_per_s"]), f"{r['ratio_to_hf_trainer']:.2f}")
            for label, r in sorted(runs.items(), key=lambda kv: kv[1].get("date", ""))
            if "ours" in r and "hf_trainer" in r]
    return table(["run", "date", "commit", "machine", "precision", "our loss", "ours, tokens/s", "HF Trainer, tokens/s",
                  "ours / HF"], body, ["l", "l", "l", "l", "l", "l", "r", "r", "r"])


def train_step_pairs() -> str:
    """The A/B runs of our loop: interleaved pairs, one setting against another."""
    body = []
    for label, r in sorted(load("train_step.json")["runs"].items(), key=lambda kv: kv[1].get("date", "")):
        key = next((k for k in r if k.startswith("pair_ratios_")), None)
        if not key:
            continue
        a, b = key.removeprefix("pair_ratios_").split("_to_")
        body.append((f"`{label}`", r.get("date", ""), r.get("what", ""), _machine(r),
                     f"{thousands(r[f'ours_{a}']['median_tokens_per_s'])} / {thousands(r[f'ours_{b}']['median_tokens_per_s'])}",
                     ", ".join(f"{x:.2f}" for x in r[key]), f"**{r[f'median_ratio_{a}_to_{b}']:.2f}**"))
    return table(["run", "date", "what", "machine", "medians, tokens/s (A / B)", "A / B per pair", "median A / B"],
                 body, ["l", "l", "l", "l", "r", "r", "r"])


def add_domain() -> str:
    """Adding one domain through ``chameleon sync`` against rebuilding every domain."""
    r = load("add_domain.json")
    k = r["k"]
    body = [(f"add `{r['new_domain']}` to {k} domains via `chameleon sync`", f"{r['sync_median_s']} s",
             ", ".join(f"{s:.2f}" for s in r["sync_s"])),
            (f"all {k + 1} domains' corpus and embeddings, then affinity, weights, diagnostics",
             f"{r['scratch_median_s']} s", ", ".join(f"{s:.2f}" for s in r["scratch_s"])),
            ("ratio", f"**{r['ratio']}**", f"ideal 1/(k+1) = {r['expected_ratio_1_over_k_plus_1']}")]
    return table(["path", f"median of {r['repeats']}", "each"], body, ["l", "r", "l"]) + (
        f"\n\nSetup excluded from both (syncing the {k} domains, proxy training included): "
        f"{r['setup_s_including_proxy_training']} s. Recorded {r.get('date', '')}, {_machine(r)}.")


def corpus_read() -> str:
    """Reading domains out of one sharded dataset (``bench/bench_corpus_read.py``): MB of
    kept text per second, per format, task and number of workers."""
    r = load("corpus_read.json")
    d = r["dataset"]
    what = {"read": f"read one domain (`{d['filtered_domain']}`, {d['filtered_text_mb']} MB) out of the dataset",
            "build": "build that domain's shards (read, filter, tokenise, pack)",
            "build_all": f"build the whole dataset's shards ({d['text_mb']} MB), unfiltered"}
    body = [(f"`{row['format']}`", what[row["what"]], str(row["workers"]), seconds(row["seconds"]),
             f"{row['text_mb_per_s']:.2f}", f"{row['source_mb_per_s']:.2f}") for row in r["rows"]]
    formats = "; ".join(f"{k}: {v}" for k, v in d["formats"].items())
    return table(["format", "task", "workers", "s", "text MB/s", "source MB/s"], body,
                 ["l", "l", "r", "r", "r", "r"]) + (
        f"\n\nThe dataset: {thousands(d['documents'])} documents of the default corpus in "
        f"{d['shards']} shards ({formats}); tokenizer `{r['tokenizer']}`; {_machine(r)}.")


def provenance() -> str:
    """Loading the code location and a run with nothing to do, against ``import dagster``."""
    r = load("provenance.json")
    targets = r.get("targets", {})
    body = [("`python -c \"import dagster\"`", f"{r['import_dagster_s']} s", "1", ""),
            ("`python -c \"import chameleon_assets.definitions\"`", f"{r['import_definitions_s']} s",
             f"**{r['definitions_over_dagster']}**", f"at most {targets.get('definitions_over_dagster', '')}"),
            ("`make run` with everything up to date", f"{r['noop_make_run_s']} s",
             f"**{r['noop_make_run_over_dagster']}**", f"at most {targets.get('noop_make_run_over_dagster', '')}")]
    return table(["measurement", f"median of {r.get('repeats', '')}", "ratio to `import dagster`", "target"], body,
                 ["l", "r", "r", "l"])


def methods_cost() -> str:
    """What each mixture's weights cost: FLOPs counted (machine-independent) and wall seconds."""
    r = load("methods.json")
    ratio = r.get("flops_ratio_to_chameleon_pretrain", {})
    free = [m for m, c in r["weights_cost"].items() if not c["flops"]]
    body = []
    for m, c in r["weights_cost"].items():
        if m in free:
            continue
        parts = ", ".join(f"{p} {100 * f / c['flops']:.1f}%" for p, f in c["parts"].items()) if c["flops"] else ""
        body.append((f"`{m}`", f"{c['flops']:.3g}", f"{ratio.get(m, '')}", seconds(c["wall_s"]), parts))
    if free:
        body.append((", ".join(f"`{m}`" for m in free), "0", "0", "0", "closed form"))
    return table(["mixture", "FLOPs", "x chameleon_pretrain", "wall s", "where the FLOPs went"], body,
                 ["l", "r", "r", "r", "l"]) + f"\n\nRecorded {r.get('date', '')} on {r.get('domains_before', '')} " \
        f"domains, profile `{r.get('profile', '')}`, {_machine(r)}."


def methods_add_domain() -> str:
    """What adding one domain costs each method."""
    r = load("methods.json")
    return table(["after adding one domain", "wall s"],
                 [(name, seconds(s)) for name, s in r["add_domain_s"].items()], ["l", "r"]) + \
        f"\n\nThe added domain: `{r.get('new_domain', '')}`, to {r.get('domains_before', '')} domains."


# --- GPU ---------------------------------------------------------------------------------

def gpu() -> str:
    """``bench/results/gpu.json`` when a GPU run is recorded; otherwise says that none is."""
    if not (results_dir() / "gpu.json").is_file():
        return ("**Not measured yet.** `bench/results/gpu.json` does not exist: no GPU run has been recorded. "
                "`make bench-gpu` on a CUDA machine writes it, and the next build of these pages shows it here.")
    out = []
    for label, run in load("gpu.json").get("runs", {}).items():
        env = run.get("environment", {})
        peak = env.get("peak_flops")
        out.append(f"#### `{label}` {{#gpu-{re.sub(r'[^a-z0-9]+', '-', label.lower())}}}\n\n"
                   f"{env.get('device', '')} ({run.get('mode', '')} mode), commit `{run.get('commit', '')}`, "
                   f"{run.get('date', '')}; torch {env.get('torch', '')}, CUDA {env.get('cuda', '')}, transformers "
                   f"{env.get('transformers', '')}. Peak for MFU: "
                   + (f"{peak / 1e12:.1f} TFLOP/s ({env.get('peak_source', '')})" if peak else "not recorded")
                   + (f"; data sheet {env['datasheet_peak_flops'] / 1e12:.0f} TFLOP/s"
                      if env.get("datasheet_peak_flops") else "") + ".")
        results = run.get("results", {})
        loops = [(f"`{name}`", thousands(r["tokens_per_s"]) if "tokens_per_s" in r else "",
                  f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "",
                  "yes" if r.get("compiled") else "no", r.get("loss", ""), r.get("precision", ""),
                  f"{r['first_step_s']:.1f}" if "first_step_s" in r else "",
                  f"{r['peak_memory_gib']:.1f}" if r.get("peak_memory_gib") is not None else "", r.get("error", ""))
                 for name, r in results.items() if "tokens_per_s" in r or "error" in r]
        out.append(table(["loop", "tokens/s (steady state)", "MFU", "compiled", "loss", "precision", "first step s",
                          "peak GiB", "error"], loops, ["l", "r", "r", "l", "l", "l", "r", "r", "l"]))
        if run.get("summary"):
            out.append(table(["ratio", "value"], [(f"`{k}`", f"{v:.3f}") for k, v in run["summary"].items()],
                             ["l", "r"]))
        losses = results.get("losses", {})
        loss_rows = [(f"`{name}`", f"{v['ms']:.2f}", "" if v.get("peak_memory_gib") is None
                      else f"{v['peak_memory_gib']:.2f}", f"{v.get('loss_abs_diff', 0):.1e}",
                      f"{v.get('grad_hidden_rel_diff', 0):.1e}")
                     for name, v in losses.items() if isinstance(v, dict) and "ms" in v]
        if loss_rows:
            out.append(table(["loss alone", "ms", "peak GiB", "loss diff", "grad diff (relative)"], loss_rows,
                             ["l", "r", "r", "r", "r"]))
        emb = results.get("embedder", {})
        emb_rows = [(f"`{name}`", f"{v['speedup']:.2f}x", f"{v['max_abs_diff']:.1e}", f"{v['min_cosine']:.6f}")
                    for name, v in emb.items() if isinstance(v, dict) and "speedup" in v]
        if emb_rows:
            out.append(table(["embedder precision", "speed vs reference", "largest difference", "smallest cosine"],
                             emb_rows, ["l", "r", "r", "r"]))
    return "\n\n".join(out) or "`bench/results/gpu.json` holds no run."


def gpu_smoke() -> str:
    """``bench/results/gpu_smoke.json`` (``bench/gpu_smoke.sh``) when a GPU run is recorded;
    otherwise says that none is."""
    if not (results_dir() / "gpu_smoke.json").is_file():
        return ("**Not run on a GPU yet.** `bench/results/gpu_smoke.json` does not exist: the script has only been "
                "rehearsed on the CPU (in `make test`). The first run on a GPU node writes it, and the next build "
                "of these pages shows it here.")
    r = load("gpu_smoke.json")
    env = r.get("environment", {})
    head = (f"Profile `{r.get('profile', '')}`: the whole graph in **{seconds(r.get('run_s'))} s** (target "
            f"{r.get('target_s', '')} s, {'met' if r.get('within_target') else 'not met'})"
            + (f", install {seconds(r['install_s'])} s" if r.get("install_s") else "")
            + (f"; {env['device']}" if env.get("device") else "") + ".")
    steps = [(f"`{asset}`", seconds(s)) for asset, s in r.get("steps_by_asset_s", {}).items()]
    training = [(f"`{asset}`" + ("" if name == asset else f" `{name}`"),
                 thousands(m["tokens_per_s"]) if m.get("tokens_per_s") else "",
                 f"{100 * m['mfu']:.1f}%" if m.get("mfu") is not None else "", str(m.get("training_device", "")))
                for asset, runs in r.get("training", {}).items() for name, m in runs.items()]
    out = [head]
    if steps:
        out.append(table(["asset (all its steps)", "s"], steps, ["l", "r"]))
    if training:
        out.append(table(["training", "tokens/s", "MFU", "device"], training, ["l", "r", "r", "l"]))
    return "\n\n".join(out)


# --- The files themselves ----------------------------------------------------------------

def results_index() -> str:
    """Every file in ``bench/results/``: what it records and what writes it."""
    body = []
    for path in sorted(results_dir().iterdir()):
        if path.name.startswith("."):
            continue
        what, date, writer = "", "", ""
        script = REPO / "bench" / f"bench_{path.stem}.py"
        if path.suffix == ".json":
            record = json_files.loads(path.read_text(encoding="utf-8"))
            what = record.get("benchmark") or record.get("what") or _first_line(script)
            dates = [r.get("date", "") for r in record.get("runs", {}).values()] + [record.get("date", "")]
            date = max(d for d in dates if d) if any(dates) else ""
            writer = f"`bench/{script.name}`" if script.is_file() else f"`{record['command']}`" \
                if "command" in record else ""
        else:
            sibling = results_dir() / (re.sub(r"_(comparison|bits_per_byte)$", "", path.stem) + ".json")
            what = f"beside `{sibling.name}`" if sibling.is_file() else ""
        body.append((f"`{path.name}`", what, date, writer))
    return table(["file", "what it records", "latest date", "written by"], body)


def _first_line(script: Path) -> str:
    """The first line of a benchmark script's docstring ("" without one)."""
    if not script.is_file():
        return ""
    import ast

    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def value(file: str, key: str, fmt: str = "") -> str:
    """One recorded value, for a sentence: ``key`` is a dotted path into the JSON file."""
    node: Any = load(file)
    for part in key.split("."):
        node = node[part]
    return format(node, fmt) if fmt else str(node)
