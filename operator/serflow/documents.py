"""Reading a Profile document or a SerflowInference manifest from a file (or a shipped preset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from serflow.errors import InputError
from serflow.presets import preset_names, preset_text
from serflow.spec import Workload, parse_workload

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
PRESET_PREFIX = "preset:"


def load_yaml(text: str, source: str) -> Any:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(e, "problem", None) or "not valid YAML or JSON"
        raise InputError(where, f"not valid YAML or JSON ({problem})") from None
    if not docs:
        raise InputError(source, "empty document")
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
            if p.stat().st_size > MAX_DOCUMENT_BYTES:
                raise InputError(ref, f"larger than {MAX_DOCUMENT_BYTES // 2**20} MiB")
            text = p.read_text()
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
