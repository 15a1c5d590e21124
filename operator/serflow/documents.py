"""Reading a Profile document or a SerflowInference manifest from a file (or a shipped preset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from serflow.domain import Workload
from serflow.errors import InputError
from serflow.presets import preset_names, preset_text
from serflow.spec import parse_workload

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_DOCUMENT_VALUES = 100_000
"""Values a document may hold once YAML's aliases are expanded: a few kilobytes of
aliases can stand for billions of values, which validation would then walk."""
MAX_DOCUMENT_DEPTH = 64
"""Nesting a document may have (a SerflowInference needs under ten levels)."""
PRESET_PREFIX = "preset:"


def read_bounded(path: Path, limit: int, what: str) -> str:
    """The text of ``path``, refused past ``limit`` bytes; read up to the limit, never
    trusting the file's stated size (a device such as /dev/zero states 0)."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError(str(path), f"{what} larger than {limit // 2**20} MiB")
    return data.decode()


def check_size(doc: Any, source: str) -> None:
    """Refuse a document with more than ``MAX_DOCUMENT_VALUES`` values (aliases expanded)
    or nested deeper than ``MAX_DOCUMENT_DEPTH``, walking at most that many."""
    stack, seen = [(doc, 1)], 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_DOCUMENT_VALUES:
            raise InputError(source, f"more than {MAX_DOCUMENT_VALUES:,} values (YAML aliases?)")
        if depth > MAX_DOCUMENT_DEPTH:
            raise InputError(source, f"nested deeper than {MAX_DOCUMENT_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((c, depth + 1) for c in children)


def load_yaml(text: str, source: str) -> Any:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except RecursionError:
        raise InputError(source, f"nested deeper than {MAX_DOCUMENT_DEPTH} levels") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(e, "problem", None) or "not valid YAML or JSON"
        raise InputError(where, f"not valid YAML or JSON ({problem})") from None
    if not docs:
        raise InputError(source, "empty document")
    for d in docs:
        check_size(d, source)
    if len(docs) > 1:
        # A multi-document file: take the first serflow document.
        for d in docs:
            if isinstance(d, dict) and d.get("kind") in ("Profile", "SerflowInference"):
                return d
    return docs[0]


def read_document(ref: str) -> Any:
    """The first serflow document of ``ref``: a path to YAML/JSON (at most
    ``MAX_DOCUMENT_BYTES``), or ``preset:NAME`` for a shipped preset; unparsed."""
    if ref.startswith(PRESET_PREFIX):
        name = ref[len(PRESET_PREFIX) :]
        try:
            text = preset_text(name)
        except KeyError:
            raise InputError(ref, f"no such preset (have: {', '.join(preset_names())})") from None
    else:
        p = Path(ref)
        try:
            text = read_bounded(p, MAX_DOCUMENT_BYTES, "document")
        except FileNotFoundError:
            raise InputError(ref, "no such file") from None
        except (IsADirectoryError, UnicodeDecodeError, PermissionError) as e:
            raise InputError(ref, f"cannot read ({type(e).__name__})") from None
    return load_yaml(text, ref)


def workload_of(doc: Any, ref: str) -> Workload:
    """Parse a document read from ``ref``; an error names ``ref`` first."""
    try:
        return parse_workload(doc)
    except InputError as e:
        raise e.within(ref) if not e.where.startswith(ref) else e from None


def read_workload(ref: str) -> Workload:
    """Parse ``ref`` (see ``read_document``) into a Workload."""
    return workload_of(read_document(ref), ref)
