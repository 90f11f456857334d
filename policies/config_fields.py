"""Schema fields that carry their allowed values, so that a bad value is refused before any work starts.

`num(default, lo=..., hi=...)`, `seq(factory, length=..., lo=..., hi=...)` and `choice(default, options)` are
`dataclasses.field`s whose metadata holds a `Rule`; `alloy.config.validate` walks a command's schema and checks every
composed value against its rule (`violation`), so a rule lives beside the value's meaning and its default. The rule
of a list (or of a dict's values, such as `randomize` ranges) applies to every number in it. Floats must always be
finite. Light on purpose (no torch): the CLI checks configs with it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable

RULE = "alloy.rule"  # the metadata key of a field's Rule


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a value (or every number of a list / of a dict's values) may be."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is not allowed
    hi_open: bool = False
    integer: bool = False  # for the message: "a positive integer"
    length: int | None = None  # lists: exactly this many values
    ordered: bool = False  # lists: non-decreasing ([low, high] ranges)
    options: tuple[Any, ...] | None = None
    note: str = ""  # what a special value means, e.g. "0: none"

    def describe(self) -> str:
        """What is allowed, as the end of "it must be ..."."""
        if self.options is not None:
            return "one of: " + ", ".join(str(o) for o in self.options)
        if self.integer and self.lo == 1 and not self.lo_open and self.hi is None:
            bounds = "a positive integer"
        else:
            parts = []
            if self.lo is not None:
                parts.append(f"{'>' if self.lo_open else '>='} {_fmt(self.lo)}")
            if self.hi is not None:
                parts.append(f"{'<' if self.hi_open else '<='} {_fmt(self.hi)}")
            bounds = " and ".join(parts) or "a finite number"
        return bounds + (f" ({self.note})" if self.note else "")

    def number_ok(self, x: Any) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return False
        if isinstance(x, float) and not math.isfinite(x):
            return False
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        return not (self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)))


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def num(default: Any, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
        hi_open: bool = False, note: str = "") -> Any:
    """A number field (int, float or Optional: None always passes) within [lo, hi] (open ends as asked)."""
    integer = isinstance(default, int) and not isinstance(default, bool)
    rule = Rule(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, integer=integer, note=note)
    return dataclasses.field(default=default, metadata={RULE: rule})


def seq(factory: Callable[[], Any] | None, *, length: int | None = None, lo: float | None = None,
        hi: float | None = None, lo_open: bool = False, hi_open: bool = False, ordered: bool = False,
        integer: bool = False, note: str = "") -> Any:
    """A list field (or a dict of lists / numbers) whose every number lies within [lo, hi]; `length` fixes the size
    of each list, `ordered` asks for non-decreasing values (a [low, high] range). `factory` None: an Optional list
    that defaults to None."""
    rule = Rule(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, integer=integer, length=length, ordered=ordered,
                note=note)
    if factory is None:
        return dataclasses.field(default=None, metadata={RULE: rule})
    return dataclasses.field(default_factory=factory, metadata={RULE: rule})


def choice(default: Any, options: Sequence[Any]) -> Any:
    """A field whose value is one of `options`."""
    return dataclasses.field(default=default, metadata={RULE: Rule(options=tuple(options))})


def rule_of(field: dataclasses.Field) -> Rule | None:
    return field.metadata.get(RULE)


def violation(value: Any, rule: Rule, key: str) -> tuple[str, Any] | None:
    """(the key of the bad value, the bad value) when `value` breaks `rule`, else None. Lists and dicts are checked
    whole (length, order) and item by item; None (an unset Optional) always passes."""
    if value is None:
        return None
    if rule.options is not None:
        return None if value in rule.options else (key, value)
    if isinstance(value, Mapping):
        for name, item in value.items():
            bad = violation(item, rule, f"{key}.{name}")
            if bad is not None:
                return bad
        return None
    if isinstance(value, (list, tuple)):
        if rule.length is not None and len(value) != rule.length:
            return key, value
        if not all(not isinstance(x, (list, tuple, Mapping)) and rule.number_ok(x) for x in value):
            return key, value
        if rule.ordered and any(b < a for a, b in zip(value, value[1:])):
            return key, value
        return None
    return None if rule.number_ok(value) else (key, value)


def explain(rule: Rule, value: Any) -> str:
    """What `value` should have been: "it must be ..." (or "each value must be ..." for a list)."""
    if not isinstance(value, (list, tuple)):
        return f"it must be {rule.describe()}"
    bounded = rule.lo is not None or rule.hi is not None
    if rule.length is None and not rule.ordered:
        return f"each value must be {rule.describe()}"
    text = "it must be a list of " + (f"{rule.length} values" if rule.length is not None else "values")
    text += " in non-decreasing order ([low, high])" if rule.ordered else ""
    return text + (f", each {rule.describe()}" if bounded else "")
