"""The settings types of the science, declared and checked without any framework.

A setting the science needs (a model's width, a learning rate, a method's step size) is
a field of a plain dataclass that lives beside the code that uses it (``ModelConfig``
in ``core.model``, ``TrainConfig`` in ``core.train``, a method's ``Params`` in its
module), with its range written into its type::

    @settings
    class TrainConfig:
        lr: PositiveFloat = 3e-3

``settings`` makes the class a dataclass that checks every field when an object is made (``TrainConfig(lr=0)`` raises
``InvalidSetting``), and then the class's own ``check()`` for rules that join fields.
The same annotations serve the application's YAML schema: the ``Check`` markers speak
pydantic's core-schema protocol (``__get_pydantic_core_schema__``, plain dictionaries),
so ``chameleon_assets.settings`` validates a file into these very classes with its
one-line messages, while this module imports nothing but the standard library: a
notebook or a bare GPU machine can build and train a model without pydantic.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

__all__ = ["Check", "InvalidSetting", "settings", "PositiveInt", "NonNegativeInt", "PositiveFloat",
           "NonNegativeFloat", "UnitInterval", "HalfOpenUnitInterval", "NonEmptyStr", "StrictStr", "StrictBool"]


class InvalidSetting(ValueError):
    """A setting out of its range, or two settings that do not fit together.

    ``field``: the dotted name relative to the object checked; ``got``: the value at fault.
    """

    def __init__(self, field: str, message: str, got: Any):
        super().__init__(f"{field}: {message} (got {got!r})")
        self.field, self.message, self.got = field, message, got


@dataclass(frozen=True)
class Check:
    """The type and range of a scalar setting: strict type (``true`` is not an integer,
    ``"3"`` not a number, an integer is a number), bounds, finiteness, minimum length."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None

    def problem(self, value: Any, kind: type) -> str | None:
        """What is wrong with ``value`` as a ``kind`` under this check, or None."""
        if kind is bool:
            return None if isinstance(value, bool) else "must be true or false"
        if kind is str:
            if not isinstance(value, str):
                return "must be a string"
            return "must not be empty" if self.min_length and len(value) < self.min_length else None
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            return "must be a number" if kind is float else "must be an integer"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        for bound, holds, words in ((self.ge, lambda v, b: v >= b, "greater than or equal to"),
                                    (self.gt, lambda v, b: v > b, "greater than"),
                                    (self.le, lambda v, b: v <= b, "less than or equal to"),
                                    (self.lt, lambda v, b: v < b, "less than")):
            if bound is not None and not holds(value, bound):
                return f"must be {words} {_number(bound, kind)}"
        return None

    def __get_pydantic_core_schema__(self, source: type, handler: Any) -> dict:
        """pydantic's schema for ``source`` in strict mode with these bounds (a plain dict)."""
        schema = dict(handler(source))
        schema["strict"] = True
        for key in ("ge", "gt", "le", "lt", "min_length"):
            if getattr(self, key) is not None:
                schema[key] = getattr(self, key)
        if source is float:
            schema["allow_inf_nan"] = False
        return schema


def _number(bound: float, kind: type) -> str:
    return str(int(bound)) if kind is int and float(bound).is_integer() else str(bound)


PositiveInt = Annotated[int, Check(ge=1)]
NonNegativeInt = Annotated[int, Check(ge=0)]
PositiveFloat = Annotated[float, Check(gt=0)]
NonNegativeFloat = Annotated[float, Check(ge=0)]
UnitInterval = Annotated[float, Check(ge=0, le=1)]  # [0, 1]
HalfOpenUnitInterval = Annotated[float, Check(ge=0, lt=1)]  # [0, 1)
NonEmptyStr = Annotated[str, Check(min_length=1)]
StrictStr = Annotated[str, Check()]
StrictBool = Annotated[bool, Check()]


def settings(cls: type) -> type:
    """``cls`` as a dataclass that checks its fields on construction (module docstring).

    Integers given for float fields become floats (as the YAML schema makes them), so an
    object compares and hashes the same however it was made. Unknown keys are refused by
    the YAML schema too (``__pydantic_config__``, a plain dict).
    """
    own_check = cls.__dict__.get("check")
    hints: dict[str, Any] = {}

    def __post_init__(self) -> None:  # noqa: N807
        if not hints:  # resolved on first use: the annotations may name classes defined later
            hints.update(typing.get_type_hints(cls, vars(sys.modules[cls.__module__]), include_extras=True))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            checked = _checked(value, hints[f.name], f.name)
            if checked is not value:
                object.__setattr__(self, f.name, checked)
        if own_check is not None:
            own_check(self)

    cls.__post_init__ = __post_init__
    cls.__pydantic_config__ = {"extra": "forbid"}
    return dataclass(cls)


def _checked(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against type ``hint`` (returned, ints made floats where floats are due)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        kind, checks = args[0], [a for a in args[1:] if isinstance(a, Check)]
        for check in checks:
            problem = check.problem(value, kind)
            if problem:
                raise InvalidSetting(where, problem, value)
        return float(value) if kind is float and checks else value
    if origin is Literal:
        if value not in args:
            raise InvalidSetting(where, f"must be one of {', '.join(map(repr, args))}", value)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return value
        options = [a for a in args if a is not type(None)]
        return _checked(value, options[0], where) if len(options) == 1 else value
    if origin is list and args:
        return [_checked(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and len(args) == 2:
        return {_checked(k, args[0], where): _checked(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and not isinstance(value, hint):
        raise InvalidSetting(where, f"must be a {hint.__name__}", value)
    return value
