"""The operator image's hash-checked lock (``operator/requirements.lock``, installed by
``Dockerfile.operator`` with ``--require-hashes``) agrees with ``pyproject.toml``: every
dependency and build requirement at the same version, every package with a hash."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "operator" / "requirements.lock"
IN = REPO / "operator" / "requirements.in"


def _pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def _exact(reqs: list[str]) -> dict[str, str]:
    out = {}
    for text in reqs:
        r = Requirement(text)
        (spec,) = r.specifier
        assert spec.operator == "==", f"{text}: not pinned exactly"
        out[r.name.lower().replace("_", "-")] = spec.version
    return out


def test_the_lock_pins_what_pyproject_pins() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = _exact(project["project"]["dependencies"]) | _exact(
        project["build-system"]["requires"]
    )
    lock = _pins(LOCK.read_text().splitlines())
    listed = _pins(IN.read_text().splitlines())
    assert listed == wanted, "operator/requirements.in differs from pyproject.toml"
    assert {k: lock.get(k) for k in wanted} == wanted, "re-run pip-compile (requirements.in)"


def test_every_locked_package_has_a_hash() -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", LOCK.read_text())
    pinned = [b for b in blocks if re.match(r"^[A-Za-z0-9_.-]+==", b)]
    assert len(pinned) == len(_pins(LOCK.read_text().splitlines())) > 20
    assert all("--hash=sha256:" in b for b in pinned)
