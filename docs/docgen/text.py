"""Small helpers shared by the generators: Markdown tables and cell text."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

_CODE = re.compile(r"(`+)(.+?)\1", re.S)


def escape(text: str) -> str:
    """``text`` safe inside a Markdown table cell: one line, and outside code spans ``|``
    escaped and ``<`` / ``>`` written as entities (so ``cuda:<index>`` is not read as an
    HTML tag). Python-Markdown's tables leave a ``|`` inside a code span alone."""
    text = " ".join(str(text).split())
    out, last = [], 0
    for m in _CODE.finditer(text):
        out.append(_plain(text[last:m.start()]))
        out.append(m.group(0))
        last = m.end()
    out.append(_plain(text[last:]))
    return "".join(out)


def _plain(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: Sequence[str] | None = None) -> str:
    """A Markdown table; cells are escaped with ``escape`` (write code spans in backticks).

    ``align``: one of ``l``/``r`` per column (default: left)."""
    marks = {"l": "---", "r": "---:"}
    lines = ["| " + " | ".join(escape(h) for h in header) + " |",
             "|" + "|".join(marks[a] for a in (align or ["l"] * len(header))) + "|"]
    lines += ["| " + " | ".join(escape("" if c is None else c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: float, digits: int = 3) -> str:
    """A setting's value as a person writes it: ``1`` for 1.0, ``0.003``, ``1e-09``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 else f"{value:g}"


def thousands(value: float, digits: int = 0) -> str:
    """``5332.3`` -> ``5,332``; ``digits`` decimals."""
    return f"{value:,.{digits}f}"
