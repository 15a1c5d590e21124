"""``bench/`` imports nothing from ``tests/``: a benchmark runs from an installed test bed
(``serflow_testbed``), and the helpers it shares with the tests live there, once. The
benches' sources are parsed (``ast``), so an import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imports_of_tests(path: Path) -> list[str]:
    """``line: module`` for each import of the ``tests`` package in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{node.lineno}: {n}" for n in names if n.split(".")[0] == "tests"]
    return found


def test_bench_imports_nothing_from_tests() -> None:
    benches = sorted((REPO / "bench").glob("*.py"))
    assert benches, "bench/ has no Python file"
    found = {p.name: imports_of_tests(p) for p in benches}
    assert not {k: v for k, v in found.items() if v}, found


def test_the_check_finds_an_import_of_tests(tmp_path: Path) -> None:
    bench = tmp_path / "b.py"
    bench.write_text(
        "import os\n"
        "from tests.runtime.faults import fault_run\n"
        "def f():\n"
        "    import tests.controller.manifests\n"
        "from serflow_testbed import tests_helpers\n"
    )
    assert imports_of_tests(bench) == ["2: tests.runtime.faults", "4: tests.controller.manifests"]
