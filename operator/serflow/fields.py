"""Reading untrusted mappings field by field, so every error names its path.

Used by the profile, price-sheet and manifest parsers. Pure: takes parsed YAML/JSON values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from serflow.errors import InputError


class Fields:
    """A mapping under a dotted path (e.g. ``profile.configs[0]``)."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, Mapping):
            raise InputError(path, f"expected a mapping, got {_kind(value)}")
        self.value: Mapping[str, Any] = value
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.value.get(key) is not None

    def raw(self, key: str) -> Any:
        if key not in self.value or self.value[key] is None:
            raise InputError(self.at(key), "missing")
        return self.value[key]

    def sub(self, key: str) -> Fields:
        return Fields(self.raw(key), self.at(key))

    def opt_sub(self, key: str) -> Fields:
        return Fields(self.value.get(key) or {}, self.at(key))

    def text(self, key: str, default: str | None = None) -> str:
        if default is not None and not self.has(key):
            return default
        v = self.raw(key)
        if not isinstance(v, str) or not v:
            raise InputError(self.at(key), f"expected a non-empty string, got {_kind(v)}")
        return v

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        min: float | None = None,
        max: float | None = None,
        above: float | None = None,
    ) -> float:
        if default is not None and not self.has(key):
            return default
        return number(self.raw(key), self.at(key), min=min, max=max, above=above)

    def integer(self, key: str, default: int | None = None, *, min: int | None = None) -> int:
        if default is not None and not self.has(key):
            return default
        v = self.raw(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise InputError(self.at(key), f"expected an integer, got {_kind(v)}")
        if min is not None and v < min:
            raise InputError(self.at(key), f"expected an integer >= {min}, got {v}")
        return v

    def items(self, key: str, *, nonempty: bool = True) -> list[tuple[str, Any]]:
        """(path, value) pairs of a list field."""
        v = self.raw(key) if nonempty else (self.value.get(key) or [])
        if not isinstance(v, Sequence) or isinstance(v, str):
            raise InputError(self.at(key), f"expected a list, got {_kind(v)}")
        if nonempty and not v:
            raise InputError(self.at(key), "expected a non-empty list")
        return [(f"{self.at(key)}[{i}]", x) for i, x in enumerate(v)]

    def numbers(self, key: str, *, min: float | None = None) -> tuple[float, ...]:
        return tuple(number(x, p, min=min) for p, x in self.items(key))

    def string_map(self, key: str) -> dict[str, str]:
        v = self.value.get(key) or {}
        if not isinstance(v, Mapping) or not all(
            isinstance(k, str) and isinstance(x, str) for k, x in v.items()
        ):
            raise InputError(self.at(key), "expected a mapping of strings to strings")
        return dict(v)


def number(
    v: Any,
    path: str,
    *,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InputError(path, f"expected a finite number, got {_kind(v)}")
    x = float(v)
    if min is not None and x < min:
        raise InputError(path, f"expected a number >= {min:g}, got {x:g}")
    if above is not None and x <= above:
        raise InputError(path, f"expected a number > {above:g}, got {x:g}")
    if max is not None and x > max:
        raise InputError(path, f"expected a number <= {max:g}, got {x:g}")
    return x


def _kind(v: Any) -> str:
    if v is None:
        return "nothing"
    if isinstance(v, bool | int | float):
        return repr(v)
    if isinstance(v, str):
        return repr(v) if len(v) < 40 else "a long string"
    return f"a {type(v).__name__}"
