"""Dockerfile.worker and Dockerfile.fn cannot be built here: check what can be read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from serflow_runtime.cli import parser

REPO = Path(__file__).resolve().parents[2]


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize(
    ("name", "command"), [("Dockerfile.worker", "worker"), ("Dockerfile.fn", "function")]
)
def test_dockerfile(name: str, command: str) -> None:
    ins = _instructions(REPO / name)
    froms = [arg for op, arg in ins if op == "FROM"]
    assert len(froms) == 1
    image = froms[0].split()[0]
    # pinned: by digest, or by an exact x.y.z tag (never latest or a moving major tag)
    assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+[\w.-]*$", image), image
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), users
    # every package installed with an exact version
    for op, arg in ins:
        if op == "RUN" and "pip install" in arg:
            for cmd in arg.split("&&"):
                if "pip install" not in cmd:
                    continue
                pkgs = [
                    t
                    for t in cmd.split("pip install", 1)[1].split()
                    if not t.startswith("-") and "://" not in t
                ]
                assert pkgs and all("==" in p for p in pkgs), cmd
    entry = [arg for op, arg in ins if op == "ENTRYPOINT"]
    assert len(entry) == 1 and not [op for op, _ in ins if op == "CMD"]
    argv = json.loads(entry[0])  # exec form: one process, no shell
    assert argv[:2] == ["python", "-m"]
    module = argv[2]
    assert (REPO / "images" / (module.replace(".", "/") + ".py")).is_file(), module
    assert argv[3] == command
    # the arguments parse with the real CLI
    args = parser().parse_args(argv[3:])
    assert args.cmd == command and args.host == "0.0.0.0"
    copied = [arg for op, arg in ins if op == "COPY"]
    assert any(c.split()[0] == "images/serflow_runtime" for c in copied)
