"""Reading a validated mapping field by field: conversion, defaults and paths.

The parsers validate a document against its JSON Schema (``serflow.schemas.validate``)
first, so types and bounds hold here. What is left: converting values, taking a missing
field's default from the schema, and naming the path of the cross-field rules' errors.
Pure: takes parsed YAML/JSON values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serflow.errors import InputError


class Fields:
    """A mapping under a dotted path (e.g. ``profile.configs[0]``) and the schema it follows."""

    def __init__(self, value: Any, path: str, schema: Mapping[str, Any] | None = None) -> None:
        self.value: Mapping[str, Any] = value or {}
        self.path = path
        self.schema: Mapping[str, Any] = schema or {}

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.value.get(key) is not None

    def _schema_of(self, key: str) -> Mapping[str, Any]:
        props: Mapping[str, Any] = self.schema.get("properties") or {}
        return props.get(key) or {}

    def raw(self, key: str, default: Any = None) -> Any:
        """The value, else the schema's default, else ``default`` (for a default the schema
        cannot state, such as another field's value); missing if none."""
        v = self.value.get(key)
        if v is None:
            v = self._schema_of(key).get("default")
        if v is None:
            v = default
        if v is None:
            raise InputError(self.at(key), "missing")
        return v

    def sub(self, key: str) -> Fields:
        return Fields(self.raw(key), self.at(key), self._schema_of(key))

    def opt_sub(self, key: str) -> Fields:
        return Fields(self.value.get(key) or {}, self.at(key), self._schema_of(key))

    def text(self, key: str, default: str | None = None) -> str:
        return str(self.raw(key, default))

    def number(self, key: str, default: float | None = None) -> float:
        return float(self.raw(key, default))

    def integer(self, key: str, default: int | None = None) -> int:
        return int(self.raw(key, default))

    def flag(self, key: str) -> bool:
        """A boolean; false when neither given nor defaulted."""
        return bool(self.raw(key, False))

    def _list(self, key: str) -> list[Any]:
        """A list field, else the schema's default, else empty."""
        v = self.value.get(key)
        return list(v if v is not None else self._schema_of(key).get("default") or [])

    def each(self, key: str) -> list[Fields]:
        """The mappings of a list field."""
        items = self._schema_of(key).get("items") or {}
        return [Fields(v, f"{self.at(key)}[{i}]", items) for i, v in enumerate(self._list(key))]

    def numbers(self, key: str) -> tuple[float, ...]:
        return tuple(float(x) for x in self._list(key))

    def texts(self, key: str) -> tuple[str, ...]:
        return tuple(str(x) for x in self._list(key))

    def string_map(self, key: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.value.get(key) or {}).items()}
