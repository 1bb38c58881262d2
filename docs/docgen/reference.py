"""The configuration reference, read from the schema so that it cannot drift from it.

Every setting is a field of a dataclass (``chameleon_assets.settings`` composes the
science's ``core.config`` types and each method's ``Params``). For each class this writes
a table: the field, its type, its range (``core.schema.Check`` bounds, ``Literal``
choices, a validator's own message), its default, and what the code says about it (a
comment on or above the field, or the ``name``: part of the class docstring). Rules that
join fields are read from the class's checks: each ``InvalidSetting``/``_invalid`` they
raise names a field and a message, and that message is what the reference prints. A new
field, class or method therefore appears here without editing the docs.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from docgen.text import escape, number, table

REQUIRED = object()
# The exceptions the schema raises for a value it refuses (their first two arguments: field, message).
_RAISES = ("InvalidSetting", "_invalid")
# The settings classes already written on the page being built: each is written once, where
# the page first meets it, and linked to after that.
_DONE: set = set()


def reset() -> None:
    """Forget which classes were written (the hook calls it at the start of every page)."""
    _DONE.clear()


# --- Types and ranges ---------------------------------------------------------------

def type_and_range(hint: Any, link: Callable[[type], str]) -> tuple[str, str]:
    """How a field's annotation reads to a person: (type, range). ``link`` names a
    settings class (a link to its table)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        from chameleon_assets.core.schema import Check

        kind, rule = type_and_range(args[0], link)
        rules = [rule] if rule else []
        rules += [check_range(m, args[0]) for m in args[1:] if isinstance(m, Check)]
        if any(not isinstance(m, Check) for m in args[1:]):
            rules.append(validator_range(hint))
        return kind, "; ".join(r for r in rules if r)
    if origin is Literal:
        return "string" if all(isinstance(a, str) for a in args) else "value", \
            "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        parts = [type_and_range(a, link) for a in options]
        kind = " or ".join(p[0] for p in parts) + (" or `null`" if len(options) < len(args) else "")
        return kind, "; ".join(p[1] for p in parts if p[1])
    if origin is list:
        kind, rule = type_and_range(args[0], link)
        return f"list of {kind}", _each(rule)
    if origin is dict:
        kind, rule = type_and_range(args[1], link)
        return f"mapping of names to {kind}", _each(rule)
    if dataclasses.is_dataclass(hint):
        return link(hint), ""
    simple = {bool: "true or false", int: "integer", float: "number", str: "string", Path: "path", Any: "any"}
    return simple.get(hint, getattr(hint, "__name__", str(hint))), ""


def _each(rule: str) -> str:
    return rule if not rule or rule.startswith("each ") else f"each {rule}"


def check_range(check: Any, kind: type) -> str:
    """A ``Check`` as a person reads it: ``> 0``, ``[0, 1)``, ``not empty``."""
    if check.min_length:
        return "not empty"
    low = f"[{number(check.ge)}" if check.ge is not None else f"({number(check.gt)}" if check.gt is not None else ""
    high = f"{number(check.le)}]" if check.le is not None else f"{number(check.lt)})" if check.lt is not None else ""
    if low and high:
        return f"{low}, {high}"
    if low:
        return ("≥ " if low[0] == "[" else "> ") + low[1:]
    if high:
        return ("≤ " if high[-1] == "]" else "< ") + high[:-1]
    return ""


def validator_range(hint: Any) -> str:
    """What a validator attached to a string type accepts, in its own words: the message
    the schema gives for a value nobody would write."""
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(hint).validate_python("\N{REPLACEMENT CHARACTER}")
    except ValidationError as exc:
        return exc.errors()[0]["msg"].removeprefix("Value error, ")
    return ""


# --- Values ---------------------------------------------------------------------------

def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return REQUIRED


def value_text(value: Any, link: Callable[[type], str]) -> str:
    """A default as it would be written in YAML (a settings object: its class, and the
    fields where it differs from that class's own defaults)."""
    if value is REQUIRED:
        return "required"
    if dataclasses.is_dataclass(value):
        try:
            plain = type(value)()
        except TypeError:
            plain = None
        diffs = [f"{f.name}: {_yaml(getattr(value, f.name))}" for f in dataclasses.fields(value)
                 if plain is None or getattr(value, f.name) != getattr(plain, f.name)]
        return link(type(value)) + (f" with `{', '.join(diffs)}`" if diffs else "")
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        return number(value)
    if isinstance(value, str):
        return value or '""'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


# --- What the code says about a field ------------------------------------------------

def _class_source(cls: type) -> tuple[ast.ClassDef, list[str], dict[int, str]] | None:
    """The class's syntax tree, its source lines and its comments by line (numbers from 1)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return None
    tree = ast.parse(source).body[0]
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    return (tree, source.splitlines(), comments) if isinstance(tree, ast.ClassDef) else None


def field_notes(cls: type) -> dict[str, str]:
    """Per field: the comment block right above it and the comment after it, then the
    ``name``: part of the class docstring."""
    names = [f.name for f in dataclasses.fields(cls)]
    notes = dict.fromkeys(names, "")
    parsed = _class_source(cls)
    if parsed:
        tree, lines, comments = parsed
        for node in tree.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in notes:
                above, line = [], node.lineno - 1
                while line >= 1 and lines[line - 1].strip().startswith("#"):
                    above.insert(0, comments[line])
                    line -= 1
                after = comments.get(node.end_lineno or node.lineno, "") \
                    if not lines[(node.end_lineno or node.lineno) - 1].strip().startswith("#") else ""
                notes[node.target.id] = " ".join(p for p in (*above, after) if p)
    for name, text in docstring_notes(docstring(cls), names).items():
        notes[name] = " ".join(p for p in (notes[name], text) if p)
    return notes


def docstring_notes(doc: str, names: list[str]) -> dict[str, str]:
    """``{name: text}`` for each ````name````: in ``doc``: the text up to the next such
    field or the end of the paragraph."""
    found = [m for m in re.finditer(r"``(\w+)``:", doc) if m.group(1) in names]
    out = {}
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(doc)
        paragraph_end = doc.find("\n\n", m.end())
        if paragraph_end != -1:
            end = min(end, paragraph_end)
        if m.start() > 0 and doc[m.start() - 1] == "(":  # "(``name``: ...)" inside a sentence
            end = min(end, _closing(doc, m.end()))
        out[m.group(1)] = " ".join(doc[m.end():end].split()).rstrip(";, ")
    return out


def _closing(text: str, start: int) -> int:
    """The position of the ``)`` that closes a parenthesis opened before ``start``."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return len(text)


def docstring(cls: type) -> str:
    """The class's own docstring ("" for a dataclass without one, whose generated
    docstring is only its signature)."""
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(f"{cls.__name__}(") else doc


def attribute_comment(cls: type, name: str) -> str:
    """The comment after the class attribute ``name = ...``, or ""."""
    parsed = _class_source(cls)
    if not parsed:
        return ""
    tree, _, comments = parsed
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return comments.get(node.end_lineno or node.lineno, "")
    return ""


def class_summary(cls: type) -> str:
    """The class docstring without the paragraphs that document one field (``name``: ...):
    those go into the field's row."""
    names = {f.name for f in dataclasses.fields(cls)}
    paragraphs = docstring(cls).split("\n\n")
    return "\n\n".join(p for p in paragraphs
                        if not (m := re.match(r"``(\w+)``:", p.strip())) or m.group(1) not in names)


def _placeholder(expr: ast.expr, module: dict) -> str:
    """One ``{...}`` of an f-string message: the value of a module constant (a pattern, a
    limit), a name as ``<name>``, anything else as ``<...>``."""
    root = expr
    while isinstance(root, ast.Attribute):
        root = root.value
    if isinstance(root, ast.Name) and root.id in module:
        try:
            value = eval(ast.unparse(expr), {"__builtins__": {}}, dict(module))  # noqa: S307 - the module's own names
        except Exception:  # noqa: BLE001 - not a constant: shown by name below
            value = None
        if isinstance(value, (str, int, float)):
            return f"`{value}`"
    name = expr.attr if isinstance(expr, ast.Attribute) else expr.id if isinstance(expr, ast.Name) else "..."
    return f"`<{'...' if name.startswith('__') else name}>`"


def message_text(node: ast.expr, module: dict) -> str | None:
    """A string or f-string argument as a person reads it; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        out = ""
        for v in node.values:
            if isinstance(v, ast.Constant):
                out += v.value
            elif not (out and out[-1].isalnum()):  # one glued to a word is an optional suffix: left out
                out += _placeholder(v.value, module)
        return out
    return None


def raised_messages(functions: list[Any], raises: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(first argument, second argument)`` of every call to one of ``raises`` in ``functions``,
    rendered with ``message_text`` (a single-argument call gives ``("", message)``)."""
    out = []
    for fn in functions:
        source = textwrap.dedent(inspect.getsource(fn))
        module = vars(sys.modules[fn.__module__])
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in raises and node.args:
                texts = [message_text(a, module) for a in node.args[:2]]
                if all(t is not None for t in texts):
                    out.append(tuple(texts) if len(texts) == 2 else ("", texts[0]))
    return out


def class_rules(cls: type) -> list[str]:
    """The rules that join fields: what each of the class's checks (``check``, pydantic
    ``model_validator``s) raises, as ``field: message``."""
    functions = [inspect.unwrap(getattr(member, "wrapped", member)) for name, member in vars(cls).items()
                 if name == "check" or hasattr(member, "decorator_info")]  # pydantic's validators carry it
    return [f"`{where}`: {message}" for where, message in raised_messages(functions, _RAISES)]


# --- Tables -------------------------------------------------------------------------

def anchor(cls: type) -> str:
    return "ref-" + cls.__qualname__.lower().replace(".", "-")


def title(cls: type) -> str:
    return cls.__qualname__.replace(".", " ")


def link(cls: type) -> str:
    return f"[{cls.__qualname__}](#{anchor(cls)})"


def nested_classes(cls: type) -> list[type]:
    """The settings classes ``cls``'s fields hold (directly, or in a list, mapping or option)."""
    found: list[type] = []
    for hint in typing.get_type_hints(cls, include_extras=True).values():
        found += [c for c in nested_classes_of(hint) if c not in found]
    return found


def class_table(cls: type) -> str:
    """One settings class: its docstring, a table of its fields, its cross-field rules."""
    hints = typing.get_type_hints(cls, include_extras=True)
    notes = field_notes(cls)
    rows = []
    for f in dataclasses.fields(cls):
        kind, rule = type_and_range(hints[f.name], link)
        rows.append((f"`{f.name}`", kind, rule, value_text(default_of(f), link), notes[f.name]))
    parts = [class_summary(cls)]
    if rows:
        parts.append(table(["field", "type", "range", "default", "notes"], rows))
    else:
        parts.append("No settings.")
    rules = class_rules(cls)
    if rules:
        parts.append("Checked across fields:\n\n" + "\n".join(f"- {escape(r)}" for r in rules))
    return "\n\n".join(p for p in parts if p)


def classes_section(roots: list[tuple[type, str]], level: int = 3, done: set | None = None) -> str:
    """Each root class and, after it, every settings class it reaches (once, unless in
    ``done``), each under its own heading with the keys it is written at."""
    done = set() if done is None else done
    order: list[type] = []
    used_at: dict[type, list[str]] = {}

    def walk(cls: type, where: str) -> None:
        used_at.setdefault(cls, [])
        if where and where not in used_at[cls]:
            used_at[cls].append(where)
        if cls not in order:
            order.append(cls)
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            for inner in nested_classes_of(hints[f.name]):
                walk(inner, f"{where}.{f.name}" if where else f.name)

    for cls, where in roots:
        walk(cls, where)
    out = []
    for cls in order:
        if cls in done:
            continue
        done.add(cls)
        at = used_at[cls]
        where = f"Written at: {', '.join(f'`{w}`' for w in at)}.\n\n" if at else ""
        out.append(f"{'#' * level} {title(cls)} {{#{anchor(cls)}}}\n\n{where}{class_table(cls)}")
    return "\n\n".join(out)


def nested_classes_of(hint: Any) -> list[type]:
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return [hint]
    return [c for a in typing.get_args(hint) for c in nested_classes_of(a)]


# --- The reference page's parts ------------------------------------------------------

def profile_reference() -> str:
    from chameleon_assets import settings

    return classes_section([(settings.Profile, "")], done=_DONE)


def mixtures_reference() -> str:
    from chameleon_assets import settings

    return classes_section([(settings.MixturesConfig, "")], done=_DONE)


def methods_reference() -> str:
    """Every registered mixing method: what it reads, where its settings are, its
    docstring (the formula) and its ``Params``."""
    from chameleon_assets.core import methods

    out = []
    params_seen: dict[type, str] = {}
    for name, method in methods.registered().items():
        trains = "proxy" in method.needs
        has_settings = bool(dataclasses.fields(method.Params))
        if trains:
            where = f"the profile's `methods.{name}`"
        elif not method.stages:  # used by other parts of the configuration, never listed itself
            where = attribute_comment(type(method), "stages") or "not listed as a mixture itself"
        elif has_settings:  # the method says where in conf/mixtures.yaml
            where = inspect.getdoc(method.mixture_settings) or ""
        else:
            where = "none"
        facts = [("kind", "trains proxy models (assets of its own)" if trains
                  else "closed form (computed in the weights assets)")]
        if not trains:
            facts.append(("serves", ", ".join(_stages(method.stages)) or "no stage by itself"))
        facts += [("reads", ", ".join(f"`{n}`" for n in sorted(method.needs)) or "nothing"), ("settings", where)]
        if method.fit_fields:
            facts.append(("read by the fit only", ", ".join(f"`{f}`" for f in method.fit_fields)))
        body = [docstring(type(method)), table(["", ""], facts)]
        cls = method.Params
        if cls in params_seen:
            body.append(f"Settings: the same as [{params_seen[cls]}](#method-{params_seen[cls]}).")
        elif has_settings:
            params_seen[cls] = name
            body.append(class_table(cls))
            inner = [(c, "") for c in nested_classes(cls) if c not in _DONE]
            if inner:
                body.append(classes_section(inner, level=4, done=_DONE))
        out.append(f"### {name} {{#method-{name}}}\n\n" + "\n\n".join(b for b in body if b))
    return "\n\n".join(out)


def _stages(stages: frozenset[str]) -> list[str]:
    return sorted(stages, key=lambda s: ("pretrain", "finetune").index(s) if s in ("pretrain", "finetune") else 2)


def registry_reference() -> str:
    """The fields of a ``conf/domains.yaml`` entry: type and default from ``DomainSpec``,
    the rules from the messages the registry raises for each field."""
    from chameleon_assets.core import registry

    spec_fields = {f.name: f for f in dataclasses.fields(registry.DomainSpec)}
    hints = typing.get_type_hints(registry.DomainSpec)
    notes = field_notes(registry.DomainSpec)
    functions = [obj for obj in vars(registry).values()
                 if inspect.isfunction(obj) and obj.__module__ == registry.__name__]
    rules: dict[str, list[str]] = {}
    for _, message in raised_messages(functions, ("RegistryError",)):
        m = re.search(r"field '(\w+)': (.*)", message)
        if m and m.group(2) not in rules.setdefault(m.group(1), []):
            rules[m.group(1)].append(m.group(2))
    rows = []
    for name in [n for n in spec_fields if n in registry.KNOWN_FIELDS] + \
            sorted(set(registry.KNOWN_FIELDS) - set(spec_fields)):
        f = spec_fields.get(name)
        kind = type_and_range(hints[name], link)[0] if f else "string"
        default = value_text(default_of(f), link) if f else "required"
        if name in ("name", "source"):
            default = "required"
        rows.append((f"`{name}`", kind, default, "; ".join(rules.get(name, [])), notes.get(name, "")))
    groups = ", ".join(f"`{k}:`" for k in registry.GROUPS)
    return "\n\n".join([
        inspect.getdoc(registry) or "",
        f"Top-level keys: {groups}; each holds a list of entries with these fields:",
        table(["field", "type", "default", "refused when", "notes"], rows),
    ])


def sections_reference() -> str:
    """Every configuration section: its observable source asset, what it holds, who reads it."""
    from chameleon_assets.sections import config_sections

    rows = [(f"`{s.name}`", f"`config_{s.name}`", s.doc, ", ".join(f"`{a}`" for a in s.read_by))
            for s in config_sections().values()]
    return table(["section", "observed as", "what it holds", "read by"], rows)


def profiles_overview() -> str:
    """What each profile in conf/profiles/ trains, at what size, on how many seeds: one
    column per profile."""
    from chameleon_assets import paths, settings

    profiles = [settings.load_profile(path.stem)
                for path in sorted((paths.conf_dir() / "profiles").glob("*.yaml"), key=lambda p: p.stem)]
    aspects: list[tuple[str, Callable[[Any], str]]] = [
        ("tokenizer", lambda p: f"`{p.tokenizer}`"),
        ("seeds", lambda p: f"`{_yaml(p.seeds)}`"),
        ("proxy", lambda p: f"`{p.proxy.checkpoint}`" if p.proxy.checkpoint
         else f"{_model(p.proxy.model)}; {p.proxy.train.tokens:,} tokens"),
        ("embedding, per domain", lambda p: f"{p.embedding.num_samples:,} windows x {p.embedding.sample_length} "
                                            f"tokens, {p.embedding.dtype}"),
        ("base models", lambda p: f"{_model(p.base_model.model)}; {p.base_model.train.tokens:,} tokens; "
                                  f"precision `{p.base_model.train.precision}`"),
        ("`make run` trains", lambda p: ", ".join(f"`{m}`" for m in p.base_model.mixtures)),
        ("evaluation", lambda p: f"{', '.join(f'`{t}`' for t in p.evaluation.tasks)}; "
                                 f"{p.evaluation.num_fewshot}-shot; "
                                 f"{'all' if p.evaluation.limit is None else p.evaluation.limit} examples per task; "
                                 f"{p.evaluation.ppl_windows} windows per domain"),
        ("finetuning", lambda p: f"from `{p.finetune.checkpoint or p.finetune.base}`; "
                                 f"{p.finetune.train.tokens:,} tokens; mixtures "
                                 + ", ".join(f"`{m}`" for m in p.finetune.mixtures)),
        ("training processes", lambda p: f"`{p.training.launcher}` x {p.training.nproc_per_node}"),
        ("methods set", lambda p: ", ".join(f"`{m}`" for m in p.methods) or "defaults"),
    ]
    return table(["", *(f"`{p.name}`" for p in profiles)],
                 [(name, *(show(p) for p in profiles)) for name, show in aspects])


def _model(m: Any) -> str:
    return f"{m.arch}, {m.num_layers} layers, width {m.hidden_size}, context {m.context_length}"




def default_corpus(group: str = "pretrain") -> str:
    """The domains ``chameleon build-corpus`` writes (``core.default_corpus``): where each
    comes from, the pinned package version (requirements-corpus.txt) and its licence."""
    from chameleon_assets import paths
    from chameleon_assets.core import default_corpus as corpus

    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (paths.REPO_ROOT / "requirements-corpus.txt")
                           .read_text(encoding="utf-8"), re.M))
    rows = []
    for src in corpus.ALL_DOMAINS:
        if src.group != group:
            continue
        package = "the running Python's standard library" if src.package == "python" \
            else f"`{src.package}=={pins[src.package]}`" if src.package in pins else f"`{src.package}`"
        sources = ", ".join(f"{s.task} ({s.split})" for s in src.sources)
        rows.append((f"`{src.name}`", src.description, package, *([sources] if group == "finetune" else []),
                     src.licence))
    header = ["domain", "what", "package", *(["tasks (split)"] if group == "finetune" else []), "licence"]
    return table(header, rows)


def methods_summary() -> str:
    """One row per registered mixing method: kind, what it reads, its docstring's first sentence."""
    from chameleon_assets.core import methods

    rows = []
    for name, method in methods.registered().items():
        trains = "proxy" in method.needs
        rows.append((f"[`{name}`](reference.md#method-{name})",
                     "trains proxies" if trains else "online: moves during base training" if method.online
                     else "closed form",
                     "pretrain" if trains else ", ".join(_stages(method.stages)) or "none by itself",
                     ", ".join(f"`{n}`" for n in sorted(method.needs)) or "nothing",
                     " ".join(docstring(type(method)).split("\n\n")[0].split())))
    return table(["method", "kind", "stages", "reads", "what it does"], rows)
