"""Plugin config schemas: a plugin may declare ``SCHEMA`` and get ``conf`` checked, with
defaults filled in, when the declarative file is loaded.

    SCHEMA = {
        "realm":    {"type": "string", "default": "kong"},
        "require":  {"type": "boolean", "default": False},
        "ca_certs": {"type": "array", "elements": "string", "default": []},
        "limit":    {"type": "integer", "required": True, "between": [1, 100]},
        "mode":     {"type": "string", "one_of": ["strict", "lenient"]},
        "headers":  {"type": "map"},
    }

Fields not in the schema are refused, as Kong refuses them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


class SchemaError(ValueError):
    """A config value its plugin's schema refuses; C{field} is its dotted path."""

    def __init__(self, fieldName: str, problem: str) -> None:
        self.field = fieldName
        self.problem = problem
        super().__init__(f"{fieldName}: {problem}")


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "array": (list,),
    "map": (dict,),
}
_ARTICLES = {"integer": "an integer", "array": "an array"}


def _typeOk(kind: str, value: object) -> bool:
    if kind not in _TYPES:
        raise TypeError(f"unknown schema type {kind!r}")
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[kind])


def _describe(kind: str) -> str:
    return _ARTICLES.get(kind, f"a {kind}")


def _valueName(value: object) -> str:
    for kind in _TYPES:
        if _typeOk(kind, value):
            return _describe(kind)
    return "nothing" if value is None else type(value).__name__


def _checkField(name: str, spec: Mapping[str, Any], value: object) -> None:
    kind = spec.get("type", "string")
    if not _typeOk(kind, value):
        raise SchemaError(name, f"expected {_describe(kind)}, got {_valueName(value)}")
    if "one_of" in spec and value not in spec["one_of"]:
        choices = ", ".join(repr(c) for c in spec["one_of"])
        raise SchemaError(name, f"expected one of: {choices}")
    if "between" in spec:
        low, high = spec["between"]
        if not low <= value <= high:
            raise SchemaError(name, f"value should be between {low} and {high}")
    if kind == "array" and "elements" in spec:
        assert isinstance(value, list)
        for i, element in enumerate(value):
            if not _typeOk(spec["elements"], element):
                raise SchemaError(f"{name}[{i}]", f"expected {_describe(spec['elements'])}, "
                                                  f"got {_valueName(element)}")


def applySchema(schema: Mapping[str, Mapping[str, Any]], conf: Mapping[str, Any],
                prefix: str = "config") -> dict[str, Any]:
    """C{conf} checked against C{schema}, with defaults filled in (deep-copied)."""
    for key in conf:
        if key not in schema:
            raise SchemaError(f"{prefix}.{key}", "unknown field")
    result: dict[str, Any] = {}
    for key, spec in schema.items():
        name = f"{prefix}.{key}"
        if key in conf and conf[key] is not None:
            _checkField(name, spec, conf[key])
            result[key] = conf[key]
        elif "default" in spec:
            result[key] = copy.deepcopy(spec["default"])
        elif spec.get("required"):
            raise SchemaError(name, "required field missing")
    return result
