"""Write the README's results block from ``bench/results/``.

The README cannot run the docs' hooks, so its one table of measured numbers is written
here, between ``<!-- results:begin -->`` and ``<!-- results:end -->``, by the same
generators the site uses; ``tests/test_docs.py`` fails when the README's block differs
from what this prints. After a re-measurement::

    .venv/bin/python docs/render_readme.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
if str(DOCS) not in sys.path:
    sys.path.insert(0, str(DOCS))

from docgen import REPO, results  # noqa: E402 - needs the path above

README = REPO / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
BLOCK = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)


def results_block() -> str:
    """The README's results: the pretraining study's headline table and what it supports,
    then the finetuning study's verdicts."""
    return "\n\n".join([
        BEGIN,
        "Pretraining, profile `cpu-study` (bits per byte, lower is better; `*`: the 95% interval of the paired "
        "difference against uniform excludes 0):",
        results.study_summary("cpu_study_comparison.csv", columns="headline"),
        results.study_verdicts("cpu_study_comparison.csv"),
        "Finetuning, profile `cpu-finetune-study`:",
        results.study_verdicts("cpu_finetune_study_comparison.csv"),
        END,
    ])


def rendered(readme: str) -> str:
    """``readme`` with its results block replaced (a ValueError if it has none)."""
    if not BLOCK.search(readme):
        raise ValueError(f"{README} has no {BEGIN} ... {END} block")
    return BLOCK.sub(lambda _: results_block(), readme, count=1)


def main() -> int:
    text = README.read_text(encoding="utf-8")
    new = rendered(text)
    if new != text:
        README.write_text(new, encoding="utf-8")
        print(f"rewrote the results block of {README}")
    else:
        print(f"{README}: results block up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
