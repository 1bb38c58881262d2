"""Honest few-shot evaluation: shots never come from the scored split; scores carry their
standard error, the number of scored examples and the chance level."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from chameleon_assets.core.evaluate import EVAL_TASKS_DIR, run_lm_eval, within_chance
from chameleon_assets.eval_tasks import utils

# One xdist worker runs this whole file: its module-scoped fixture is built once.
pytestmark = pytest.mark.xdist_group("fewshot")

LOCAL_TASKS = sorted(utils.SUBDIRS)
SHOTS = 3
CONTEXTS_PER_TASK = 25


def _shot_text(doc: dict) -> str:
    """A solved example as lm-eval writes it into a few-shot context (target delimiter " ")."""
    if "continuation" in doc:  # WinoGrande: the right context, then the shared continuation
        return f"{doc['choices'][doc['gold']]} {doc['continuation']}"
    return f"{doc['query']} {doc['choices'][doc['gold']]}"


def _shots_in_contexts(task, count: int) -> list[str]:
    """The shots lm-eval puts before the first ``count`` scored documents of ``task``."""
    task.set_fewshot_seed(seed=0)
    shots: list[str] = []
    for doc in list(task.eval_docs)[:count]:
        context = task.fewshot_context(doc, num_fewshot=SHOTS)
        if isinstance(context, list):  # WinoGrande: one context per option, same shots
            context = context[0]
        pieces = context.split(task.config.fewshot_delimiter)
        assert len(pieces) == SHOTS + 1, "a shot or the scored prompt itself holds the delimiter"
        shots += pieces[:-1]
    return shots


@pytest.fixture(scope="module")
def task_dict(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every local task, plus COPA as it was configured before: shots from the scored split."""
    from lm_eval.tasks import TaskManager, get_task_dict

    old = tmp_path_factory.mktemp("old_tasks")
    (old / "copa_same_split.yaml").write_text(
        f"include: {EVAL_TASKS_DIR / 'copa_local.yaml'}\ntask: copa_same_split\nfewshot_split: validation\n"
    )
    manager = TaskManager(include_path=[str(EVAL_TASKS_DIR), str(old)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return get_task_dict([f"{t}_local" for t in LOCAL_TASKS] + ["copa_same_split"], manager)


@pytest.mark.parametrize("name", LOCAL_TASKS)
def test_shot_pool_and_scored_set_are_disjoint_by_content(name: str) -> None:
    splits = utils.load(name)
    scored, shots = splits[utils.SCORED_SPLIT], splits[utils.SHOT_SPLIT]
    assert len(scored) > 0 and len(shots) >= 10
    scored_keys = {utils.content_key(d) for d in scored}
    shot_keys = [utils.content_key(d) for d in shots]
    assert not scored_keys.intersection(shot_keys)
    assert len(set(shot_keys)) == len(shot_keys)  # no example twice in the pool
    scored_queries = {k[0] for k in scored_keys if k[0]}
    assert not scored_queries.intersection(k[0] for k in shot_keys)


def test_validation_held_out_pools_are_a_fixed_tenth_of_validation() -> None:
    for name in ("copa", "sciq"):
        assert utils.shot_source(name) == "validation"
        splits = utils.load(name)
        total = len(splits[utils.SCORED_SPLIT]) + len(splits[utils.SHOT_SPLIT])
        assert total == {"copa": 100, "sciq": 1000}[name]
        assert len(splits[utils.SHOT_SPLIT]) == round(total * utils.VALIDATION_SHOT_FRACTION)
    copa = utils.load("copa")
    assert copa[utils.SCORED_SPLIT][0]["query"] == "The man turned on the faucet therefore"  # order is kept
    assert {utils.shot_source(n) for n in LOCAL_TASKS if n not in ("copa", "sciq")} == {"train"}


@pytest.mark.parametrize("name", ["arc_easy", "copa"])  # a pool from the training split, one held out of validation
def test_zero_shot_builds_no_pool_and_scores_the_same_examples(name: str) -> None:
    """run_lm_eval with num_fewshot 0 builds no shot pool (shot_pools(False)); the scored
    examples do not change. lm-eval imports utils.py by its path, as a second module: that
    copy follows the setting too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("utils_as_lm_eval_loads_it", EVAL_TASKS_DIR / "utils.py")
    path_copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(path_copy)
    full = utils.load(name)
    for module in (utils, path_copy):
        with utils.shot_pools(False):
            bare = module.load(name)
        assert len(bare[utils.SHOT_SPLIT]) == 0 < len(full[utils.SHOT_SPLIT])
        assert bare[utils.SHOT_SPLIT].column_names == full[utils.SCORED_SPLIT].column_names
        assert bare[utils.SCORED_SPLIT].to_list() == full[utils.SCORED_SPLIT].to_list()
    assert len(path_copy.load(name)[utils.SHOT_SPLIT]) == len(full[utils.SHOT_SPLIT])  # outside: the pool again


def test_training_shots_are_in_the_scored_prompt_format() -> None:
    arc = utils.load("arc_easy")[utils.SHOT_SPLIT][0]
    assert arc["query"].startswith("Question: ") and arc["query"].endswith("\nAnswer:")
    obqa = utils.load("openbookqa")[utils.SHOT_SPLIT][0]
    assert not obqa["query"].startswith("Question:") and len(obqa["choices"]) == 4
    wino = utils.load("winogrande")[utils.SHOT_SPLIT][0]
    assert wino["query"] == "" and len(wino["choices"]) == 2 and wino["continuation"]


@pytest.mark.parametrize("name", LOCAL_TASKS)
def test_no_scored_example_is_shown_as_a_shot(task_dict: dict, name: str) -> None:
    task = task_dict[f"{name}_local"]
    assert task.config.fewshot_split == utils.SHOT_SPLIT
    shots = _shots_in_contexts(task, CONTEXTS_PER_TASK)
    pool = {_shot_text(d) for d in utils.load(name)[utils.SHOT_SPLIT]}
    scored = {_shot_text(d) for d in task.eval_docs}
    assert all(s in pool for s in shots)  # the shots are recognised: the check below can bite
    assert not scored.intersection(shots)


def test_the_check_catches_shots_drawn_from_the_scored_split(task_dict: dict) -> None:
    # The configuration before this change (fewshot_split: validation): lm-eval draws the
    # shots from the scored examples, the one being scored included.
    task = task_dict["copa_same_split"]
    scored = {_shot_text(d) for d in task.eval_docs}
    leaked = [s for s in _shots_in_contexts(task, CONTEXTS_PER_TASK) if s in scored]
    assert len(leaked) == SHOTS * CONTEXTS_PER_TASK


def test_run_lm_eval_reports_stderr_n_and_chance() -> None:
    from chameleon_assets.core.model import build_model
    from chameleon_assets.core.tokenizer import load_tokenizer
    from chameleon_assets.settings import ModelConfig

    tok = load_tokenizer("bpe-8k")
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context_length=128)
    model = build_model(cfg, len(tok), tok.eos_token_id, 0).eval()
    limit = 7
    scores = run_lm_eval(model, tok, ["arc_easy_local", "winogrande_local"], 2, limit, 8, 128, torch.device("cpu"))
    arc_docs = utils.load("arc_easy")[utils.SCORED_SPLIT].select(range(limit))
    expected_chance = {"arc_easy_local": sum(1 / len(d["choices"]) for d in arc_docs) / limit, "winogrande_local": 0.5}
    for task, m in scores.items():
        assert m["n"] == limit and m["chance"] == pytest.approx(expected_chance[task]), task
        for metric in ("acc", "acc_norm") if task == "arc_easy_local" else ("acc",):
            p = m[metric]
            assert 0.0 <= p <= 1.0 and p * limit == pytest.approx(round(p * limit)), task
            assert m[f"{metric}_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / (limit - 1))), task
    assert "acc_norm" not in scores["winogrande_local"]


def test_answers_longer_than_the_context_are_scored_not_refused() -> None:
    """lm-eval asserts when an answer alone exceeds the model's context (PIQA answers reach
    150 tokens; the cpu profile's models see 128); such answers are scored on their start."""
    from chameleon_assets.core.model import build_model
    from chameleon_assets.core.tokenizer import load_tokenizer
    from chameleon_assets.settings import ModelConfig

    tok = load_tokenizer("bpe-8k")
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context_length=16)
    model = build_model(cfg, len(tok), tok.eos_token_id, 0).eval()
    docs = utils.load("piqa")[utils.SCORED_SPLIT].select(range(6))
    assert max(len(tok.encode(" " + c)) for d in docs for c in d["choices"]) > 16  # the case is exercised
    scores = run_lm_eval(model, tok, ["piqa_local"], 0, 6, 8, 16, torch.device("cpu"))
    assert scores["piqa_local"]["n"] == 6 and 0.0 <= scores["piqa_local"]["acc"] <= 1.0


def test_within_chance_on_hand_worked_numbers() -> None:
    # 4 choices, 100 examples: the standard error of guessing is sqrt(0.25 * 0.75 / 100) = 0.0433,
    # so the band is 1.96 * 0.0433 = 0.0849 around 0.25.
    assert within_chance(0.30, 100, 0.25)  # 0.05 <= 0.0849
    assert not within_chance(0.34, 100, 0.25)  # 0.09 > 0.0849: above chance
    assert not within_chance(0.15, 100, 0.25)  # below chance by more than the band is not chance either
    # 2 choices, 400 examples: sqrt(0.25 / 400) = 0.025, band 0.049; z = 3 widens it to 0.075
    assert not within_chance(0.56, 400, 0.5) and within_chance(0.56, 400, 0.5, z=3.0)
    # 0 of 6 on 4 choices: band 1.96 * sqrt(0.1875 / 6) = 0.346 > 0.25, so it is within chance
    assert within_chance(0.0, 6, 0.25)
    assert within_chance(1.0, 0, 0.5)  # no scored example: nothing tells the score from a guess


def test_readme_counts_match_the_loader() -> None:
    readme = (Path(utils.__file__).parent / "README.md").read_text()
    for name in LOCAL_TASKS:
        splits = utils.load(name)
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}_local`"))
        assert f"{len(splits[utils.SCORED_SPLIT]):,}" in row and f"{len(splits[utils.SHOT_SPLIT]):,}" in row, row


def test_xdist_groups_reach_the_scheduler(request: pytest.FixtureRequest) -> None:
    """Under `make test` (pytest-xdist, --dist loadgroup) a test of an xdist_group module
    carries its group in its id, which is what sends the module to one worker (pytest 9.2
    dropped it silently; pyproject pins below it)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not under pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@fewshot"), request.node.nodeid
