"""The shape of the control plane's imports, read from its source with ``ast``.

The pure maths (``serflow.policy``) reaches nothing but the standard library, itself and
the domain types, so the parsers, jsonschema, YAML and Kubernetes stay out of it; and no
two modules of ``serflow`` import each other round a circle, not even through an import
inside a function. Every import counts, at module scope or in a function, since either
may run.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from collections.abc import Container, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "operator" / "serflow"

POLICY = "serflow.policy"
POLICY_MAY_IMPORT = frozenset({"serflow", "serflow.domain", "serflow.wire"})
"""Besides the standard library and ``serflow.policy.*``: the package root (run by any
import of a submodule), the domain types, and the wire constants (the balancer's weight
total). Whatever these import is walked too."""
NEVER_IN_POLICY = frozenset({"jsonschema", "kopf", "kubernetes", "yaml"}) | {
    f"serflow.{m}" for m in ("spec", "profile", "schemas")
}
"""Named by the issue: what must stay unreachable even if the allowance above grows."""


@dataclass(frozen=True)
class Import:
    """One imported module as Python resolves it."""

    target: str
    """Dotted name of the module (a submodule when ``from package import submodule``)."""
    lazy: bool
    """Inside a function: runs on the first call, not when the module is imported."""


Graph = Mapping[str, tuple[Import, ...]]


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package by its own)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: Container[str]) -> tuple[Import, ...]:
    """What ``name`` imports, relative imports resolved against its package; ``known``
    holds the package's modules (to tell ``from package import submodule``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import):
            out.extend(Import(a.name, lazy) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")  # level 1 is the package itself
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            for a in node.names:
                # ``from package import submodule`` imports the submodule itself
                sub = f"{base}.{a.name}"
                out.append(Import(sub if sub in known else base, lazy))
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return tuple(out)


def graph(root: Path) -> dict[str, tuple[Import, ...]]:
    mods = modules(root)
    return {name: imports_of(name, path, mods) for name, path in mods.items()}


def _parents(module: str) -> list[str]:
    """The packages Python runs before ``module``: importing a.b.c runs a and a.b first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _in_policy(module: str) -> bool:
    return module == POLICY or module.startswith(f"{POLICY}.")


def _named(module: str) -> bool:
    return module in NEVER_IN_POLICY or module.partition(".")[0] in NEVER_IN_POLICY


def _off_limits(module: str) -> bool:
    top = module.partition(".")[0]
    if _named(module):
        return True
    if top != "serflow":
        return top not in sys.stdlib_module_names
    return not _in_policy(module) and module not in POLICY_MAY_IMPORT


def reached_from(g: Graph, start: str) -> dict[str, list[str]]:
    """Every module that importing ``start`` may run (lazy imports too), each with the
    shortest chain of imports that gets there."""
    chains = {start: [start]}
    todo = deque([start])
    while todo:
        mod = todo.popleft()
        steps = [*_parents(mod), *(i.target for i in g.get(mod, ()))]
        for nxt in steps:
            for target in [*_parents(nxt), nxt]:
                if target not in chains:
                    chains[target] = [*chains[mod], target]
                    if target in g:
                        todo.append(target)
    return chains


def circles(g: Graph, lazy: bool) -> list[list[str]]:
    """One circle per strongly connected set of modules (a -> ... -> a), in the order
    the imports run; ``lazy`` counts imports inside functions too."""
    edges = {
        m: sorted({i.target for i in imps if i.target in g and (lazy or not i.lazy)})
        for m, imps in g.items()
    }
    # Tarjan's strongly connected components, iterative (no recursion limit to meet).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                scc = set()
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    scc.add(top)
                    if top == node:
                        break
                if len(scc) > 1 or node in edges[node]:
                    found.append(_circle_in(edges, scc))
    return sorted(found)


def _circle_in(edges: Mapping[str, list[str]], scc: set[str]) -> list[str]:
    """A shortest circle through the first module of ``scc``, by breadth-first search."""
    start = min(scc)
    chains = {start: [start]}
    todo = deque([start])
    while todo:
        mod = todo.popleft()
        for nxt in edges[mod]:
            if nxt == start:
                return [*chains[mod], start]
            if nxt in scc and nxt not in chains:
                chains[nxt] = [*chains[mod], nxt]
                todo.append(nxt)
    raise AssertionError(f"no circle in {sorted(scc)}")  # cannot happen for an SCC


def _arrow(chain: list[str]) -> str:
    return " -> ".join(chain)


G = graph(SOURCE)


def test_the_walk_sees_the_imports() -> None:
    # Guards the walker itself: if it stopped reading imports, every check would pass.
    assert len(G) > 30
    assert set(G) >= POLICY_MAY_IMPORT  # no stale name in the allowance
    balancer = {i.target: i for i in G["serflow.policy.balancer"]}
    assert {"dataclasses", "serflow.wire"} <= set(balancer)
    assert not balancer["serflow.wire"].lazy
    # ``from serflow.k8s import envoy`` imports the submodule
    assert "serflow.k8s.envoy" in {i.target for i in G["serflow.k8s.router"]}


def test_the_walk_resolves_relative_and_lazy_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("import json\nfrom .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n    from .. import a\n")
    g = graph(pkg)
    assert [(i.target, i.lazy) for i in g["pkg"]] == [("pkg.a", False)]
    assert [(i.target, i.lazy) for i in g["pkg.a"]] == [("json", False), ("pkg.sub.b", False)]
    assert [(i.target, i.lazy) for i in g["pkg.sub.b"]] == [("pkg.a", True), ("pkg.a", True)]
    assert circles(g, lazy=False) == []
    assert circles(g, lazy=True) == [["pkg.a", "pkg.sub.b", "pkg.a"]]
    assert reached_from(g, "pkg.sub.b")["json"] == ["pkg.sub.b", "pkg.a", "json"]
    assert reached_from(g, "pkg.sub.b")["pkg"] == ["pkg.sub.b", "pkg"]  # the parent runs first


@pytest.mark.parametrize("module", sorted(filter(_in_policy, G)))
def test_policy_reaches_only_the_standard_library_and_the_domain_types(module: str) -> None:
    bad = {m: chain for m, chain in reached_from(G, module).items() if _off_limits(m)}
    # Each way in (its first module off limits) and the way to each module the issue names.
    shown = sorted(
        _arrow(chain)
        for m, chain in bad.items()
        if _named(m) or not any(map(_off_limits, chain[:-1]))
    )
    assert not shown, f"{module} imports beyond the domain types:\n  " + "\n  ".join(shown)


def test_no_import_circle_at_module_scope() -> None:
    found = circles(G, lazy=False)
    assert not found, "import circles:\n  " + "\n  ".join(map(_arrow, found))


def test_no_import_circle_broken_only_by_a_lazy_import() -> None:
    # A function-level import that closes a circle only defers it: whoever moves it to the
    # top breaks the import. Where two modules need one helper, it lives in the lower one.
    found = [c for c in circles(G, lazy=True) if c not in circles(G, lazy=False)]
    assert not found, "circles closed by an import in a function:\n  " + "\n  ".join(
        map(_arrow, found)
    )
