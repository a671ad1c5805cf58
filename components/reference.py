"""The configuration reference: every setting's key, type, default and meaning, from the specs."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from typing import Any, Literal, get_args, get_origin

from components.settings import NAMESPACE, describe


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " \\| ".join(describe(choice) for choice in get_args(annotation))
    if get_origin(annotation) in (typing.Union, type(int | None)):
        return " or ".join(_type_name(arg) for arg in get_args(annotation))
    return str(getattr(annotation, "__name__", annotation)).replace("NoneType", "null")


def rows(spec: type[Any], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every leaf setting of `spec`, nested specs flattened."""
    hints = typing.get_type_hints(spec)
    defaults = spec()
    for spec_field in dataclasses.fields(spec):
        if not spec_field.init:
            continue  # derived from the settings, not one
        key = f"{prefix}{spec_field.name}"
        annotation = hints[spec_field.name]
        if dataclasses.is_dataclass(annotation):
            yield from rows(annotation, f"{key}.")  # type: ignore[arg-type]
            continue
        meta = spec_field.metadata
        rule = ", ".join(
            part
            for part in (
                f">= {meta['minimum']}" if meta.get("minimum") is not None else "",
                f"<= {meta['maximum']}" if meta.get("maximum") is not None else "",
            )
            if part
        )
        doc = meta.get("doc", "") + (f" ({rule})" if rule else "")
        yield key, _type_name(annotation), describe(getattr(defaults, spec_field.name)), doc


def markdown(spec: type[Any]) -> str:
    """A Markdown table of `rows(spec)`; defaults shown are those before phase defaults apply."""
    lines = ["| key | type | default | what it does |", "|---|---|---|---|"]
    lines += [f"| `{NAMESPACE}:{key}` | {kind} | `{default}` | {doc} |" for key, kind, default, doc in rows(spec)]
    return "\n".join(lines) + "\n"
