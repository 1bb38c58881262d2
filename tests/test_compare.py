"""The comparison table: aggregation over seeds and domains, paired tests, chance flags."""

import math

import pytest

from chameleon_assets.core import compare


def _ev(bpb: dict[str, float], acc: float = 0.3, n: int = 100, chance: float = 0.25) -> dict:
    return {"bits_per_byte": bpb, "nll": {d: v * 2 for d, v in bpb.items()},
            "perplexity": {d: math.exp(v * 2) for d, v in bpb.items()},
            "tasks": {"arc": {"acc": acc, "acc_stderr": 0.04, "n": n, "chance": chance}}}


def test_means_and_intervals_match_hand_worked_numbers() -> None:
    # uniform, 3 seeds, domains a and b. Per-seed domain means: (1.0+2.0)/2 = 1.5, 1.6, 1.7.
    # Mean 1.6, s = 0.1, half-width t_{0.975,2} * 0.1 / sqrt(3) = 4.302653 * 0.057735 = 0.248414.
    uniform = {0: _ev({"a": 1.0, "b": 2.0}), 1: _ev({"a": 1.1, "b": 2.1}), 2: _ev({"a": 1.2, "b": 2.2})}
    comp = compare.compare({"uniform": uniform}, {"uniform": {"a": 0.5, "b": 0.5}})
    row = comp.rows["uniform"]
    assert row["seeds"] == 3 and row["w.a"] == 0.5
    assert row["bpb_avg"] == pytest.approx(1.6)
    assert row["bpb_avg_hi"] - row["bpb_avg"] == pytest.approx(0.248414, abs=1e-6)
    assert row["bpb.a"] == pytest.approx(1.1) and row["nll_avg"] == pytest.approx(3.2)
    # arithmetic-mean perplexity: per seed (e^2 + e^4) / 2 etc., then the mean over seeds
    expected = sum((math.exp(2 * x) + math.exp(2 * (x + 1))) / 2 for x in (1.0, 1.1, 1.2)) / 3
    assert row["ppl_avg_arith"] == pytest.approx(expected)
    assert "d_bpb_avg" not in row  # the baseline is not compared with itself


def test_a_planted_gap_is_significant_and_identical_mixtures_are_not() -> None:
    seeds_noise = {0: 0.00, 1: 0.05, 2: -0.04}  # shared by both mixtures at each seed: pairing removes it
    base = {s: _ev({"a": 1.0 + e, "b": 1.5 + e, "c": 2.0 + e}) for s, e in seeds_noise.items()}
    worse = {s: _ev({"a": 1.3 + e + 0.01 * s, "b": 1.8 + e, "c": 2.3 + e - 0.01 * s}) for s, e in seeds_noise.items()}
    same = {s: _ev({"a": 1.0 + e, "b": 1.5 + e, "c": 2.0 + e}) for s, e in seeds_noise.items()}
    comp = compare.compare({"uniform": base, "worse": worse, "same": same})
    assert comp.baseline == "uniform"
    assert comp.rows["worse"]["d_bpb_avg"] == pytest.approx(0.3) and comp.rows["worse"]["d_bpb_avg_sig"] == 1.0
    assert comp.rows["worse"]["d_bpb.a_sig"] == 1.0
    assert comp.rows["same"]["d_bpb_avg"] == 0.0 and comp.rows["same"]["d_bpb_avg_sig"] == 0.0
    cells = compare.summary_cells(comp)
    assert cells["worse"]["bpb - uniform (paired)"].endswith("*")
    assert not cells["same"]["bpb - uniform (paired)"].endswith("*")
    assert cells["uniform"]["bpb - uniform (paired)"] == "(baseline)"
    assert "*" in compare.domain_cells(comp)["worse"]["a"]


def test_one_seed_has_no_interval_and_nothing_is_significant() -> None:
    comp = compare.compare({"uniform": {0: _ev({"a": 1.0})}, "other": {0: _ev({"a": 2.0})}})
    assert math.isnan(comp.rows["other"]["bpb_avg_lo"]) and comp.rows["other"]["d_bpb_avg_sig"] == 0.0
    assert compare.summary_cells(comp)["other"]["bpb, mean over domains [95% CI]"] == "2.000"
    assert "one seed for uniform, other: no interval" in comp.notes[-1]


def test_accuracy_within_chance_is_flagged() -> None:
    comp = compare.compare({"uniform": {0: _ev({"a": 1.0}, acc=0.27)}, "good": {0: _ev({"a": 1.0}, acc=0.60)}})
    assert comp.rows["uniform"]["acc.arc_within_chance"] == 1.0 and comp.rows["good"]["acc.arc_within_chance"] == 0.0
    cells = compare.summary_cells(comp)
    assert cells["uniform"]["acc arc"] == "0.270 ± 0.040 (chance)" and cells["good"]["acc arc"] == "0.600 ± 0.040"


def test_without_the_baseline_there_are_no_paired_columns_and_a_note_says_why() -> None:
    comp = compare.compare({"natural": {0: _ev({"a": 1.0})}})
    assert comp.baseline is None and "d_bpb_avg" not in comp.rows["natural"]
    assert "uniform" in comp.notes[0]


def test_seeds_without_a_partner_are_not_paired() -> None:
    comp = compare.compare({"uniform": {0: _ev({"a": 1.0}), 1: _ev({"a": 1.2})},
                            "other": {1: _ev({"a": 1.5}), 2: _ev({"a": 9.0})}})
    assert comp.rows["other"]["d_bpb_avg"] == pytest.approx(0.3)  # seed 1 only
    assert comp.rows["other"]["seeds"] == 2 and comp.rows["other"]["d_bpb_avg_n"] == 1
    assert "covers the 1 seed(s) it shares with uniform (1), of its 2" in comp.notes[0]
    assert compare.summary_cells(comp)["other"]["bpb - uniform (paired)"].endswith("(1 paired seeds)")


def test_comparison_inputs_leave_out_diverged_models_and_other_recipes() -> None:
    """A non-finite score or a model trained with other base-model settings is excluded
    with its reason, not allowed to fail the table or mix two recipes in one mean."""
    from chameleon_assets.defs.models.assets import comparison_inputs
    from chameleon_assets.defs.values import BaseModel, Evaluation, MixtureTable

    table = MixtureTable("w", "/tmp", ["a", "b"], {"uniform": [0.5, 0.5]}, [0.5, 0.5], [1.0, 1.0], {},
                         corpus_versions={"a": "ca", "b": "cb"})

    def model(seed: int, config: str) -> BaseModel:
        return BaseModel(f"m{seed}", "uniform", "/tmp", {"a": 0.5, "b": 0.5}, {"a": "ca", "b": "cb"}, 1, 1, 1.0, 1.0,
                         {}, "run", seed=seed, config_version=config)

    def evaluation(seed: int, bpb: float) -> Evaluation:
        return Evaluation(f"e{seed}", "uniform", "/tmp", f"m{seed}", {"a": 2.0, "b": 2.0}, {"a": bpb, "b": 1.0}, 2.0,
                          1.0, {}, 0, None, config_version="eval", val_versions={"a": "ca", "b": "cb"}, seed=seed,
                          nll={"a": 1.0, "b": 1.0})

    models = {"uniform|0": model(0, "recipe"), "uniform|1": model(1, "old recipe"), "uniform|2": model(2, "recipe")}
    evals = {"uniform|0": evaluation(0, 1.0), "uniform|1": evaluation(1, 1.0), "uniform|2": evaluation(2, math.nan)}
    current, included, excluded = comparison_inputs(table, models, evals, "eval", "recipe")
    assert list(current["uniform"]) == [0] and list(included) == ["uniform|0"]
    assert "other base-model settings" in excluded["uniform|1"]
    assert "non-finite" in excluded["uniform|2"]
