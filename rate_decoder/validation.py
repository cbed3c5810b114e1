"""The one validator of the configuration records: typed fields with checks, every problem listed at once.

A record (:class:`Record`, a frozen dataclass) declares each field with :func:`spec` and the check
of its values. Building one runs every field's check, then the record's cross-field checks, and
raises one :class:`ConfigError` listing every problem. :meth:`Record.parse` builds records from plain
data (a preset file's tables, a stored ``config.json``) and collects the problems of all nested
tables and layers before raising, so a file with several mistakes reports them all.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import MISSING, field, fields


class ConfigError(ValueError):
    """A configuration holds values that training would reject or misuse; the message lists every problem."""

    def __init__(self, problems: list[str], source: str = "configuration"):
        self.problems = list(problems)
        super().__init__(f"invalid {source}: " + "; ".join(self.problems))


# value checks: ``check(where, name, value)`` returns None or the problem, phrased for the field at ``where``

def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def must_be(predicate, requirement: str):
    def check(where: str, name: str, value):
        if not predicate(value):
            return f"{where}{name} must be {requirement}, got {value!r}"
    return check


def one_of(choices, noun: str | None = None):
    def check(where: str, name: str, value):
        if not isinstance(value, str) or value not in choices:
            return f"{where}unknown {noun or name} {value!r}; choose one of {', '.join(choices)}"
    return check


def instance_of(cls):
    def check(where: str, name: str, value):
        if not isinstance(value, cls):
            return f"{where}{name} must be a {cls.__name__}, got {type(value).__name__}"
    return check


def optional(check):
    return lambda where, name, value: None if value is None else check(where, name, value)


POSITIVE_INT = must_be(lambda v: is_int(v) and v >= 1, "a positive integer")
NON_NEGATIVE_INT = must_be(lambda v: is_int(v) and v >= 0, "a non-negative integer")
ODD_INT = must_be(lambda v: is_int(v) and v >= 1 and v % 2 == 1, "a positive odd integer (same-size reflect padding)")
POSITIVE = must_be(lambda v: is_number(v) and v > 0, "a positive finite number")
AT_LEAST_ONE = must_be(lambda v: is_number(v) and v >= 1, "a finite number >= 1")
NON_NEGATIVE = must_be(lambda v: is_number(v) and v >= 0, "a finite number >= 0")
DROPOUT = must_be(lambda v: is_number(v) and 0 <= v < 1, "a probability in [0, 1)")
TEXT = must_be(lambda v: isinstance(v, str) and v != "", "a non-empty string")
ANY_TEXT = must_be(lambda v: isinstance(v, str), "a string")
FLAG = must_be(lambda v: isinstance(v, bool), "true or false")


def spec(check, default=MISSING, number: bool = False):
    """A dataclass field with its check; ``number``: an int given for it is stored as a float."""
    return field(default=default, metadata={"check": check, "number": number})


def problems_of(cls, values: Mapping, where: str, skip=()) -> list[str]:
    """The problems of ``values`` for the fields of ``cls`` (except those in ``skip``)."""
    out = []
    for f in fields(cls):
        check = f.metadata.get("check")
        problem = check(where, f.name, values[f.name]) if check is not None and f.name not in skip else None
        if problem:
            out.append(problem)
    return out


def as_numbers(cls, values: dict) -> dict:
    """Ints given for float fields as floats (TOML ``lr = 1`` and JSON ``1.0`` must give equal configs)."""
    for f in fields(cls):
        if f.metadata.get("number") and is_int(values.get(f.name)):
            values[f.name] = float(values[f.name])
    return values


class Record:
    """Validation at construction and parsing from plain data, for frozen dataclasses whose fields use :func:`spec`."""

    def __post_init__(self):
        values = as_numbers(type(self), {f.name: getattr(self, f.name) for f in fields(self)})
        for name, value in values.items():
            object.__setattr__(self, name, value)
        problems = problems_of(type(self), values, "")
        problems = problems or self._consistency()
        if problems:
            raise ConfigError(problems, self._source())

    def _consistency(self) -> list[str]:
        """Problems involving several fields, each of them valid on its own."""
        return []

    def _source(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict:
        """Plain data (records as dicts, tuples as lists): what ``json.dumps`` writes."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def parse(cls, raw, where: str, problems: list[str]):
        """``cls`` built from the mapping ``raw``; problems go to ``problems`` and ``None`` is returned."""
        if isinstance(raw, cls):
            return raw
        if not isinstance(raw, Mapping):
            problems.append(f"{where or cls.__name__ + ' '}must be a table, got {type(raw).__name__}")
            return None
        known = {f.name: f for f in fields(cls)}
        found = [f"{where}has unknown key {key!r}" for key in raw if key not in known]
        values, failed = {}, set()
        for name, f in known.items():
            if name in raw:
                values[name] = raw[name]
            elif f.default is MISSING:
                found.append(f"{where}lacks {name!r}")
                failed.add(name)
        for name, parser in cls._nested().items():
            if name in values:
                values[name] = parser(values[name], where, found)
                if values[name] is None:
                    failed.add(name)
        values = as_numbers(cls, values)
        full = {f.name: values.get(f.name, f.default) for f in fields(cls)}
        found += problems_of(cls, full, where, skip=failed)
        if found:
            problems += found
            return None
        try:
            return cls(**values)
        except ConfigError as err:  # a cross-field problem
            problems += [f"{where}{p}" for p in err.problems]
            return None

    @classmethod
    def _nested(cls) -> dict:
        return {}


def json_ready(value):
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def differences(a, b, prefix: str = "") -> list[str]:
    """Dotted names of the fields in which two records (or their plain data) differ, e.g. ``preset.layers[0].lr``."""
    a = a.to_dict() if isinstance(a, Record) else a
    b = b.to_dict() if isinstance(b, Record) else b
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b), key=str)
                for d in differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{prefix}[{i}]")]
    return [] if a == b else [prefix]
