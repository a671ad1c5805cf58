"""Typed settings: frozen dataclasses whose fields say what they mean, and one loader for all.

A spec is a frozen dataclass. Each field is declared with `setting(default, doc, ...)`, which
records the documentation and the allowed range next to the default. `load(Spec, raw, path)`
turns a plain mapping (a stack file's YAML, or `pulumi.Config` objects) into the spec and
reports *every* problem at once, each with its key path, the value received and what is
allowed. Cross-field rules go in an optional `problems(self)` method on the spec, yielding
`(relative key, message)` pairs.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

NAMESPACE = "scaleladder"

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a stack's configuration, at a key path such as `redis.masters`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{NAMESPACE}:{self.path}: {self.message}"


class ConfigError(ValueError):
    """Every problem found in a stack's configuration, one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s):\n{lines}")


def setting(
    default: Any,
    doc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    pattern: str | None = None,
) -> Any:
    """Declare a spec field: its default, what it does, and the range a value must fall in.

    `Literal[...]` annotations give the allowed choices; `pattern` is a full-match regex for
    strings. A class as default (a nested spec, `dict`) is a factory: each instance gets its own.
    """
    metadata = {"doc": doc, "minimum": minimum, "maximum": maximum, "pattern": pattern}
    if isinstance(default, type):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


def describe(value: Any) -> str:
    """A value as it appears in an error message."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def load(spec: type[T], raw: Any, path: str = "") -> tuple[T | None, list[Problem]]:
    """Build `spec` from `raw`, returning the instance (None if any problem) and every problem."""
    value, problems = _convert(spec, raw, path)
    return (value if not problems else None), problems


def _convert(annotation: Any, raw: Any, path: str) -> tuple[Any, list[Problem]]:
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _convert_spec(annotation, raw, path)
    if origin is Literal:
        choices = get_args(annotation)
        if raw in choices and type(raw) is type(choices[0]):
            return raw, []
        allowed = ", ".join(describe(choice) for choice in choices)
        return None, [Problem(path, f"must be one of {allowed}, got {describe(raw)}")]
    if origin in (types.UnionType, typing.Union):
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        if raw is None:
            return None, []
        return _convert(options[0], raw, path)
    if origin is tuple:
        (item,) = {arg for arg in get_args(annotation) if arg is not Ellipsis}
        if not isinstance(raw, list | tuple):
            return None, [Problem(path, f"must be a list, got {describe(raw)}")]
        items, problems = [], []
        for index, element in enumerate(raw):
            converted, found = _convert(item, element, f"{path}[{index}]")
            items.append(converted)
            problems.extend(found)
        return tuple(items), problems
    if origin is dict or annotation is dict:
        if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            return None, [Problem(path, f"must be a mapping of strings to strings, got {describe(raw)}")]
        return dict(raw), []
    return _convert_scalar(annotation, raw, path)


def _convert_scalar(annotation: Any, raw: Any, path: str) -> tuple[Any, list[Problem]]:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if annotation is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw), []
    if type(raw) is annotation:
        return raw, []
    return None, [Problem(path, f"must be {names[annotation]}, got {describe(raw)}")]


def _convert_spec(spec: type[Any], raw: Any, path: str) -> tuple[Any, list[Problem]]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return None, [Problem(path, f"must be a mapping, got {describe(raw)}")]
    hints = typing.get_type_hints(spec)
    fields = {f.name: f for f in dataclasses.fields(spec) if f.init}  # init=False: derived, not a key
    problems: list[Problem] = []
    for key in raw:
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            problems.append(Problem(join(path, str(key)), f"unknown key; allowed keys here: {allowed}"))
    values: dict[str, Any] = {}
    for name, spec_field in fields.items():
        if name not in raw:
            continue
        key_path = join(path, name)
        converted, found = _convert(hints[name], raw[name], key_path)
        if not found:
            found = list(_check_bounds(spec_field, converted, key_path))
        problems.extend(found)
        values[name] = converted
    if problems:
        return None, problems
    instance = spec(**values)
    checker = getattr(instance, "problems", None)
    if checker is not None:
        problems.extend(Problem(join(path, key), message) for key, message in checker())
    return instance, problems


def _check_bounds(spec_field: dataclasses.Field[Any], value: Any, path: str) -> Iterator[Problem]:
    meta = spec_field.metadata
    minimum, maximum, pattern = meta.get("minimum"), meta.get("maximum"), meta.get("pattern")
    if value is None:
        return
    if minimum is not None and value < minimum:
        yield Problem(path, f"must be >= {describe(minimum)}, got {describe(value)}")
    if maximum is not None and value > maximum:
        yield Problem(path, f"must be <= {describe(maximum)}, got {describe(value)}")
    if pattern is not None and not re.fullmatch(pattern, value):
        yield Problem(path, f"must match {pattern}, got {describe(value)}")


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two config mappings: nested mappings merge, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
