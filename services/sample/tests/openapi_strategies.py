"""Hypothesis strategies for requests to the operations of an OpenAPI 3.1 document: valid ones from the
parameter and body schemas, and invalid ones that break one thing at a time and name what they broke."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from sample_helpers import conforms

METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")
CONTROL = [chr(c) for c in range(32)] + ["\x7f"]
# any UTF-8 character (no lone surrogates), control characters and NUL often
CHARS = st.one_of(st.sampled_from(CONTROL), st.characters(codec="utf-8"))
JUNK: list[Any] = [None, True, 1.5, "1", "", [], {}, 0, -1, 2**64, -(2**64), 10**30]
BAD_BODIES = [b"", b"{", b"not json", b"\x00", b'{"a": 1,}', b"\xff\xfe"]
NOT_JSON_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
]


@dataclass(frozen=True)
class Call:
    """One request; `field` is what an invalid call broke and its error message must name."""

    method: str
    url: str
    body: Any = None
    raw: bytes | None = None
    field: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


class Operation:
    """One path + method of the document `spec`."""

    def __init__(self, path: str, method: str, spec: dict[str, Any]) -> None:
        self.path, self.method, self.spec = path, method, spec

    @property
    def op(self) -> dict[str, Any]:
        return self.spec["paths"][self.path][self.method.lower()]

    @property
    def params(self) -> list[dict[str, Any]]:
        return list(self.op.get("parameters", []))

    @property
    def body_schema(self) -> dict[str, Any] | None:
        body = self.op.get("requestBody")
        return body["content"]["application/json"]["schema"] if body else None

    def __repr__(self) -> str:
        return f"{self.method} {self.path}"


def operations(spec: dict[str, Any]) -> list[Operation]:
    return [Operation(path, method.upper(), spec) for path, ops in spec["paths"].items() for method in ops]


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _accepts(spec: dict[str, Any], schema: dict[str, Any]) -> Callable[[Any], bool]:
    return lambda value: conforms(spec, schema, value)


def values(spec: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values `schema` accepts (type, bounds, lengths, pattern, enum, required/optional, oneOf)."""
    schema = resolve(spec, schema)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "oneOf" in schema:
        base = {k: v for k, v in schema.items() if k != "oneOf"}
        return st.one_of(
            [values(spec, {**base, "properties": {**base["properties"], **b["properties"]}}) for b in schema["oneOf"]]
        )
    kind = schema.get("type")
    if kind == "integer":
        low, high = schema.get("minimum", -(2**63)), schema.get("maximum", 2**63 - 1)
        return st.one_of(st.integers(low, min(low + 3, high)), st.integers(low, high))  # small ids exist
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 300)
        if "pattern" in schema:
            text = st.from_regex(schema["pattern"], fullmatch=True, alphabet=CHARS)
            return text.filter(lambda s: low <= len(s) <= high)
        return st.text(CHARS, min_size=low, max_size=min(high, low + 300))
    if kind == "array":
        low = schema.get("minItems", 0)
        return st.lists(values(spec, schema["items"]), min_size=low, max_size=min(schema.get("maxItems", 5), low + 5))
    if kind == "object" and "properties" in schema:
        props = schema["properties"]
        required = {k: values(spec, props[k]) for k in schema.get("required", [])}
        optional = {k: values(spec, v) for k, v in props.items() if k not in required}
        objects = st.fixed_dictionaries(required, optional=optional)
        return objects.filter(lambda o: len(o) >= schema.get("minProperties", 0))
    if kind == "object":
        return st.dictionaries(st.text(CHARS, max_size=10), st.integers() | st.text(CHARS, max_size=10), max_size=3)
    raise ValueError(f"no strategy for schema {schema}")


def wrong(spec: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values `schema` refuses: wrong type, out of range, too long or short, off-pattern, broken inside."""
    schema = resolve(spec, schema)
    kind = schema.get("type")
    options = [st.sampled_from(JUNK)]
    if kind == "integer":
        options.append(st.integers(max_value=schema.get("minimum", 0) - 1))
        options.append(st.integers(min_value=schema.get("maximum", 2**63 - 1) + 1))
    if kind == "string":
        options.append(
            st.text(CHARS, min_size=schema.get("maxLength", 300) + 1, max_size=schema.get("maxLength", 300) + 3)
        )
        options.append(st.text(CHARS, max_size=20).map(lambda s: s + "\x00"))
        options.append(values(spec, schema).map(lambda s: s + "\n"))  # past a pattern's `$`
        options.append(st.text(CHARS, max_size=20))
    if kind == "array":
        options.append(st.just([]))
        options.append(
            st.lists(
                values(spec, schema["items"]),
                min_size=schema.get("maxItems", 99) + 1,
                max_size=schema.get("maxItems", 99) + 1,
            )
        )
        options.append(st.tuples(wrong(spec, schema["items"]), values(spec, schema)).map(lambda t: [t[0], *t[1]]))
    if kind == "object" and "properties" in schema:
        options.append(broken_bodies(spec, schema).map(lambda call: call[1]))
    accepts = _accepts(spec, schema)
    return st.one_of(options).filter(lambda v: not accepts(v))


def broken_bodies(spec: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[tuple[str, Any]]:
    """(field, body): a valid body with one field wrong, a required field missing or an unknown field added."""
    schema = resolve(spec, schema)
    props = schema.get("properties", {})

    def one_wrong(name: str) -> st.SearchStrategy[tuple[str, Any]]:
        return st.tuples(values(spec, schema), wrong(spec, props[name])).map(lambda t: (name, {**t[0], name: t[1]}))

    def missing(name: str) -> st.SearchStrategy[tuple[str, Any]]:
        return values(spec, schema).map(lambda body: (name, {k: v for k, v in body.items() if k != name}))

    unknown = values(spec, schema).map(lambda body: ("zz_unknown", {**body, "zz_unknown": 1}))
    cases = [one_wrong(name) for name in props] + [missing(name) for name in schema.get("required", [])]
    accepts = _accepts(spec, schema)
    return st.one_of([*cases, unknown]).filter(lambda case: not accepts(case[1]))


def _query(name: str, value: Any) -> str:
    return f"{quote(name)}={quote(_text(value), safe='')}"


def _url(operation: Operation, path_values: dict[str, Any], query: list[str]) -> str:
    url = operation.path
    for name, value in path_values.items():
        url = url.replace("{" + name + "}", quote(_text(value), safe=""))
    return url + ("?" + "&".join(query) if query else "")


@st.composite
def valid_calls(draw: st.DrawFn, operation: Operation) -> Call:
    """A request every parameter and the body of which the document accepts."""
    path_values, query = {}, []
    for param in operation.params:
        value = draw(values(operation.spec, param["schema"]))
        if param["in"] == "path":
            path_values[param["name"]] = value
        elif param["required"] or draw(st.booleans()):
            query.append(_query(param["name"], value))
    body = operation.body_schema
    return Call(
        operation.method, _url(operation, path_values, query), draw(values(operation.spec, body)) if body else None
    )


# bad URL values: letters and digits (a '/' would reach another route, not a bad parameter), and numbers
# written as Python's int() would read them but the document's integer would not
SEGMENT = st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=40) | st.sampled_from(
    ["1_0", " 1", "1 ", "+1", "\u0665", "\u00b2", "0x1", "1e3", "1.0", "-0"]
)


@st.composite
def invalid_calls(draw: st.DrawFn, operation: Operation) -> Call:
    """A valid request with one thing broken: a parameter, a required parameter missing, the body (one field
    wrong, missing or unknown; not an object; not JSON; empty; sent as another content type) or the method."""
    call = draw(valid_calls(operation))
    spec, params, body = operation.spec, operation.params, operation.body_schema
    kinds = (
        ["method"]
        + (["param"] if any(_constrained(p["schema"]) for p in params) else [])
        + (["body", "raw", "content-type"] if body else [])
    )
    kind = draw(st.sampled_from(kinds))
    if kind == "method":
        others = [m for m in METHODS if m.lower() not in spec["paths"][operation.path]]
        method = draw(st.sampled_from(others))
        return Call(method, call.url, call.body, field=method)
    if kind == "body":
        field, broken = draw(broken_bodies(spec, body) | st.sampled_from(JUNK[:-3]).map(lambda v: ("request body", v)))
        return Call(call.method, call.url, raw=json.dumps(broken).encode(), field=field)  # null too
    if kind == "raw":
        return Call(call.method, call.url, raw=draw(st.sampled_from(BAD_BODIES)), field="request body")
    if kind == "content-type":
        content_type = (("content-type", draw(st.sampled_from(NOT_JSON_TYPES))),)
        return Call(call.method, call.url, call.body, field="content-type", headers=content_type)
    param = draw(st.sampled_from([p for p in params if _constrained(p["schema"])]))
    name, schema = param["name"], param["schema"]
    accepts = _accepts(spec, schema)
    bad = (wrong(spec, schema) | SEGMENT).filter(
        lambda v: not accepts(_read(schema, _text(v))) and (param["in"] != "path" or _segment(_text(v)))
    )
    path_values, query = {}, []
    for other in params:
        value = draw(bad) if other is param else draw(values(spec, other["schema"]))
        if other["in"] == "path":
            path_values[other["name"]] = value
        elif other is not param or not other["required"] or draw(st.booleans()):
            query.append(_query(other["name"], value))
    return Call(call.method, _url(operation, path_values, query), call.body, field=name)


def _constrained(schema: dict[str, Any]) -> bool:
    """Whether some URL text breaks `schema` (any text is a string without a pattern or bounds)."""
    return schema["type"] == "integer" or bool({"pattern", "enum", "minLength", "maxLength"} & set(schema))


def _segment(text: str) -> bool:
    """Whether `text` stays one path segment of the same route ('/', '' and dot segments would not)."""
    return "/" not in text and text not in ("", ".", "..")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _read(schema: dict[str, Any], text: str) -> Any:
    """What the document says URL text `text` is: for an integer schema, an integer only if written as one."""
    return int(text) if schema["type"] == "integer" and re.fullmatch(r"-?[0-9]+", text) else text
