"""Each harness helper is defined once, in ``serflow_testbed.harness``: the tree's Python
files are parsed (``ast``) for definitions by name, and for the literals only a helper
writes (a kubeconfig, a kwok node, the list of Knative's Ready conditions)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serflow_testbed import harness

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("operator", "images", "testbed", "tests", "bench", "hack")
HARNESS = Path(harness.__file__).resolve()


@dataclass(frozen=True)
class Helper:
    """One harness helper and how its definitions are recognised."""

    what: str
    """The helper, as a reader would name it."""
    names: frozenset[str]
    """Function or class names that define it (any nesting, with or without a leading _)."""
    dict_key: str | None = None
    """A key that only the document this helper builds has (None: names only)."""
    together: frozenset[str] = frozenset()
    """Strings that only this helper's document lists in one tuple or list literal."""


HELPERS = [
    Helper("free_port", frozenset({"free_port"})),
    Helper("wait_for / poll", frozenset({"wait_for", "poll", "wait_until"})),
    Helper("the ServiceAccount kubeconfig", frozenset({"sa_kubeconfig"}), dict_key="current-context"),
    Helper("the kwok node", frozenset({"kwok_node", "extra_nodes"}), dict_key="kwok.x-k8s.io/node"),
    Helper(
        "the Knative-Ready status",
        frozenset({"knative_ready_status", "mark_knative_ready", "set_knative_ready"}),
        together=frozenset({"ConfigurationsReady", "RoutesReady"}),
    ),
    Helper("Cluster", frozenset({"Cluster", "ControlPlane"})),
]


@dataclass(frozen=True)
class Site:
    """Where a definition (or a helper's document) is."""

    path: Path
    """The file."""
    line: int
    """Its line."""
    name: str
    """The definition's name, or the key or string found."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.name}"


def python_files(root: Path) -> Iterator[Path]:
    for top in SCANNED:
        for path in sorted((root / top).rglob("*.py")):
            if not any(part.startswith(".") or part == "__pycache__" for part in path.parts):
                yield path


def sites(helper: Helper, files: list[Path]) -> list[Site]:
    """Every definition of ``helper`` in ``files``, and every document only it builds."""
    found = []
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if node.name.lstrip("_") in helper.names:
                    found.append(Site(path, node.lineno, node.name))
            elif isinstance(node, ast.Dict) and helper.dict_key is not None:
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
                if helper.dict_key in keys:
                    found.append(Site(path, node.lineno, helper.dict_key))
            elif isinstance(node, ast.Tuple | ast.List) and helper.together:
                strings = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if helper.together <= strings:
                    found.append(Site(path, node.lineno, " ".join(sorted(helper.together))))
    return found


@pytest.mark.parametrize("helper", HELPERS, ids=[h.what for h in HELPERS])
def test_each_harness_helper_is_defined_once_in_the_harness(helper: Helper) -> None:
    found = sites(helper, list(python_files(REPO)))
    elsewhere = [str(s) for s in found if s.path.resolve() != HARNESS]
    assert not elsewhere, f"{helper.what} is also defined outside the harness: {elsewhere}"
    defs = [s for s in found if s.name.lstrip("_") in helper.names]
    assert len({s.name for s in defs}) == len(defs), f"{helper.what} twice: {defs}"
    assert defs, f"{helper.what} is not in {HARNESS.name}"
    if helper.dict_key or helper.together:
        assert len(found) - len(defs) == 1, f"{helper.what}'s document built {found}"


def test_the_check_finds_a_copy(tmp_path: Path) -> None:
    """The check finds a second ``free_port``, a ``Cluster`` class, a hand-written
    kubeconfig and Knative's conditions listed in a test."""
    (tmp_path / "tests").mkdir()
    copy = tmp_path / "tests" / "conftest.py"
    copy.write_text(
        "def free_port():\n    return 0\n\n\n"
        "class Cluster:\n    pass\n\n\n"
        "def token_config():\n    return {'current-context': 'sa'}\n\n\n"
        "READY = ('ConfigurationsReady', 'Ready', 'RoutesReady')\n"
    )
    files = list(python_files(tmp_path))
    assert files == [copy]
    by_what = {h.what: [str(s) for s in sites(h, files)] for h in HELPERS}
    assert by_what["free_port"] == [f"{copy}:1 free_port"]
    assert by_what["Cluster"] == [f"{copy}:5 Cluster"]
    assert by_what["the ServiceAccount kubeconfig"] == [f"{copy}:10 current-context"]
    assert by_what["the Knative-Ready status"] == [f"{copy}:13 ConfigurationsReady RoutesReady"]
    assert by_what["wait_for / poll"] == []
