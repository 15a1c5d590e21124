"""The documents (README.md and docs/*.md): their links resolve and their commands run.

- Links: every relative link and image points to a file in the repository, and an anchor
  to a heading of its target (as GitHub makes heading anchors).
- Fences: every fenced block names its language, so no command hides in an untagged one;
  blocks tagged sh, bash, shell or console hold commands.
- Commands: each command in those blocks is either run here, from the repository root
  with its outputs sent to a temporary folder (``serflow ...``, ``python -m
  serflow.schemas``, the recipe of ``make simulate``), or listed in ``TRACED`` with the
  test or CI step that runs it, whose files must exist and contain the command or its
  equivalent call. Any other command fails the test, named with its file and line.

No cluster, no network: the commands run are the CLI on local files.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from serflow.cli import main as serflow_main

REPO = Path(__file__).resolve().parent.parent
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
OPERATORS = {"&&", "||", ";", "|", "&"}
TIMEOUT_S = 120


# -- reading the documents ---------------------------------------------------------------


@dataclass(frozen=True)
class Fence:
    """A fenced block: its language and its lines, numbered as in the file."""

    doc: Path
    line: int
    language: str
    lines: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Command:
    """One command of a shell block (a pipeline or ``&&`` chain gives several)."""

    doc: Path
    line: int
    argv: tuple[str, ...]
    stdout_to: str | None = None
    """The file a ``>`` redirection writes, if any."""

    @property
    def text(self) -> str:
        return " ".join(self.argv)

    def where(self) -> str:
        return f"{shown(self.doc)}:{self.line}: {self.text}"


def shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return path.name


def fences(doc: Path) -> tuple[list[Fence], list[tuple[int, str]]]:
    """The fenced blocks of ``doc`` and the lines outside them."""
    out: list[Fence] = []
    prose: list[tuple[int, str]] = []
    opened: tuple[int, str, str] | None = None  # (line, marker, language)
    body: list[tuple[int, str]] = []
    for n, line in enumerate(doc.read_text().splitlines(), 1):
        m = re.match(r"\s*(`{3,}|~{3,})\s*([\w+-]*)", line)
        if opened is None:
            if m:
                opened, body = (n, m.group(1), m.group(2)), []
            else:
                prose.append((n, line))
        elif m and line.strip() == opened[1][0] * len(opened[1]):
            out.append(Fence(doc, opened[0], opened[2], tuple(body)))
            opened = None
        else:
            body.append((n, line))
    if opened is not None:
        out.append(Fence(doc, opened[0], opened[2], tuple(body)))
    return out, prose


def commands(fence: Fence) -> list[Command]:
    """The commands of a shell block: continuation lines joined, comments and prompts
    dropped, split at ``&&``, ``;`` and pipes, ``eval "$(...)"`` read as its inner command."""
    out: list[Command] = []
    pending, start = "", 0
    for n, raw in fence.lines:
        line = raw.strip()
        if not pending:
            start = n
            line = line.removeprefix("$ ")
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text, pending = pending + line, ""
        if text.strip():
            out.extend(_split(fence.doc, start, text))
    return out


def _split(doc: Path, line: int, text: str) -> list[Command]:
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    out: list[Command] = []
    argv: list[str] = []
    stdout_to: str | None = None
    tokens = list(lex)
    i = 0
    while i <= len(tokens):
        tok = tokens[i] if i < len(tokens) else ";"
        if tok in OPERATORS:
            if argv:
                if argv[0] == "eval" and len(argv) == 2 and argv[1].startswith("$("):
                    out.extend(_split(doc, line, argv[1][2:].removesuffix(")")))
                else:
                    out.append(Command(doc, line, tuple(argv), stdout_to))
            argv, stdout_to = [], None
        elif tok == ">" and i + 1 < len(tokens):
            stdout_to = tokens[i + 1]
            i += 1
        else:
            argv.append(tok)
        i += 1
    return out


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in fences(doc)[1]:
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            out.add(f"{s}-{seen[s]}" if s in seen else s)
            seen[s] = seen.get(s, 0) + 1
    return out


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def broken_links(doc: Path, root: Path = REPO) -> list[str]:
    """Relative links of ``doc`` that point to nothing in the repository (``root``)."""
    out: list[str] = []
    for n, line in fences(doc)[1]:
        for target in LINK.findall(re.sub(r"`[^`]*`", "code", line)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            try:
                dest.relative_to(root)
            except ValueError:
                out.append(f"{shown(doc)}:{n}: {target}: outside the repository")
                continue
            if not dest.exists():
                out.append(f"{shown(doc)}:{n}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                out.append(f"{shown(doc)}:{n}: {target}: no heading #{anchor} in {shown(dest)}")
    return out


# -- what covers each command ------------------------------------------------------------


@dataclass(frozen=True)
class Traced:
    """A command too costly for this test (a cluster, a Docker engine, minutes of CPU):
    where it, or its equivalent call, runs."""

    pattern: str
    """Matched against the whole command (its words joined by blanks)."""
    runs_in: str
    """The test or CI step that runs it."""
    evidence: tuple[tuple[str, str], ...]
    """(file, text it contains): the command or its equivalent call, in that test or in
    what the test runs."""
    parser: str = ""
    """``module:function`` returning the command's own argparse parser: its arguments
    must parse."""


KIND_E2E = "tests/kind/test_kind_e2e.py"
KIND_PY = "testbed/serflow_testbed/kind.py"
HARNESS = "testbed/serflow_testbed/harness.py"

TRACED: tuple[Traced, ...] = (
    Traced(r"make test", "CI: .ci/run", ((".ci/run", "make test"),)),
    Traced(
        r"make test-fast",
        "CI: .ci/run runs make test, which runs the same ruff and mypy lines and pytest over "
        "tests/, a superset of FAST_TESTS (test_fast_tier_is_inside_make_test)",
        ((".ci/run", "make test"), ("Makefile", '-m "not cluster and not kind" $(FAST_TESTS)')),
    ),
    Traced(
        r"make demo",
        f"{KIND_E2E} (the same kind path: hack/docker.sh, hack/kind.sh, the chart, the example "
        "applied and served) and tests/testbed/test_kind_demo_cli.py (the demo's own inputs); "
        "the whole replay runs by hand, its last run in bench/results/kind.md",
        (
            ("Makefile", "-m serflow_testbed.kind_demo -f $(KIND_MANIFEST)"),
            (KIND_E2E, "KindSession"),
            (KIND_E2E, "install_operator(cluster)"),
            ("tests/testbed/test_kind_demo_cli.py", "from serflow_testbed import kind_demo"),
        ),
    ),
    Traced(
        r"make demo-local( MANIFEST=examples/digits-resnet\.yaml)?",
        "tests/testbed/test_demo_e2e.py (a short replay of both examples through demo.main)",
        (
            ("Makefile", "-m serflow_testbed.demo -f $(MANIFEST)"),
            ("tests/testbed/test_demo_e2e.py", "demo.main("),
            ("tests/testbed/test_demo_e2e.py", '["digits-demo", "digits-resnet"]'),
        ),
    ),
    Traced(
        r"helm install serflow charts/serflow-operator -n serflow-system --create-namespace",
        "tests/controller/test_operator_cluster.py (harness.install_chart)",
        (
            ("tests/controller/test_operator_cluster.py", "install_chart(cluster)"),
            (HARNESS, '"upgrade", "--install", RELEASE, str(CHART), "-n", SYSTEM_NS'),
            (HARNESS, 'RELEASE = "serflow"'),
            (HARNESS, 'SYSTEM_NS = "serflow-system"'),
        ),
    ),
    Traced(
        r"helm install serflow charts/serflow-operator -n serflow-system --create-namespace "
        r"--set watchAllNamespaces=false --set watchNamespaces=\{[a-z0-9,-]+\}",
        "tests/controller/test_privilege_cluster.py (a namespaced install, checked with can-i)",
        (
            ("tests/controller/test_privilege_cluster.py", '"--set", "watchAllNamespaces=false"'),
            ("tests/controller/test_privilege_cluster.py", 'f"watchNamespaces={{'),
        ),
    ),
    Traced(
        r"helm install serflow charts/serflow-operator -n serflow-system --create-namespace "
        r'--set image\.repository=localhost:5001/serflow/operator '
        r"--set image\.digest=\$\(hack/kind\.sh digest operator\) --set resources\.requests\.cpu=20m",
        f"{KIND_E2E} (kind.install_operator)",
        (
            (KIND_E2E, "install_operator(cluster)"),
            (KIND_PY, 'REGISTRY = "localhost:5001"'),
            (KIND_PY, 'OPERATOR_REPOSITORY = f"{REGISTRY}/serflow/operator"'),
            (KIND_PY, '"--set", f"image.digest={reference(\'operator\').partition(\'@\')[2]}"'),
            (KIND_PY, '"--set", "resources.requests.cpu=20m"'),
        ),
    ),
    Traced(
        r"make images REGISTRY=\S+",
        "tests/kind (hack/kind.sh load runs the script this target runs, against the "
        "cluster's own registry)",
        (
            ("Makefile", "hack/images.sh publish $(REGISTRY) $(IMAGE_NAMES)"),
            ("hack/kind.sh", '"$HACK_DIR/images.sh" publish "$IMAGE_REGISTRY"'),
        ),
    ),
    Traced(
        r"kubectl apply -f examples/[\w.-]+\.yaml",
        "tests/schema/test_guards.py (the API server accepts every example); "
        f"{KIND_E2E} applies examples/digits-kind.yaml",
        (
            ("tests/schema/test_guards.py", 'sorted((REPO / "examples").glob("*.yaml"))'),
            (KIND_E2E, 'EXAMPLE = REPO / "examples" / "digits-kind.yaml"'),
        ),
    ),
    Traced(
        r"kubectl get sfi( -w| digits)?",
        f"{KIND_E2E} (the object's status, read with kubectl get sfi)",
        ((KIND_E2E, "status_of(self.cluster"), (KIND_PY, '"get", "sfi", name')),
    ),
    Traced(
        r"kubectl describe sfi digits",
        f"{KIND_E2E} (the conditions and the events describe shows)",
        ((KIND_E2E, '["status"]["conditions"]'), (KIND_E2E, "sfi.events()")),
    ),
    Traced(
        r"kubectl wait --for=condition=Ready sfi/digits --timeout=\d+s",
        KIND_E2E,
        ((KIND_E2E, '"wait", "--for=condition=Ready", f"sfi/{NAME}"'),),
    ),
    Traced(
        r"hack/docker\.sh (up|down)",
        f"{KIND_E2E} (kind.KindSession up and down)",
        (
            (KIND_E2E, "KindSession"),
            (KIND_PY, 'run_script(DOCKER_SH, "up"'),
            (KIND_PY, 'run_script(DOCKER_SH, "down"'),
        ),
    ),
    Traced(
        r"hack/kind\.sh (up|knative|env|down|load operator worker fn envoy)",
        f"{KIND_E2E} (kind.KindSession up and down)",
        (
            (KIND_E2E, "KindSession"),
            (KIND_PY, 'for step in (("up",), ("knative",), ("load", *IMAGES))'),
            (KIND_PY, 'IMAGES = ("operator", "worker", "fn", "envoy")'),
            (KIND_PY, 'run_script(KIND_SH, "env"'),
            (KIND_PY, 'run_script(KIND_SH, "down"'),
        ),
    ),
    Traced(
        r"hack/cluster\.sh (up|env|down)",
        "tests/conftest.py (harness.ControlPlane starts and stops it for the cluster tests)",
        (
            ("tests/conftest.py", "ControlPlane"),
            (HARNESS, 'cluster_sh("up")'),
            (HARNESS, 'cluster_sh("env")'),
            (HARNESS, 'cluster_sh("down"'),
        ),
    ),
    Traced(
        r"serflow-runtime train .*",
        "tests/runtime/test_checkpoint_data.py (the training loop, and the train command)",
        (
            ("tests/runtime/test_checkpoint_data.py", "after = train(m, small"),
            ("tests/runtime/test_checkpoint_data.py", '"train",'),
        ),
        parser="serflow_runtime.cli:parser",
    ),
    Traced(
        r"serflow-runtime export .*",
        "tests/runtime/test_artefact.py (export.export_network, and the export command)",
        (
            ("tests/runtime/test_artefact.py", "m = export.export_network("),
            ("tests/runtime/test_artefact.py", 'cli_main(["export"'),
        ),
        parser="serflow_runtime.cli:parser",
    ),
    Traced(
        r"serflow-runtime profile .*",
        "tests/runtime/test_profiler.py (the profile command on an artefact)",
        (("tests/runtime/test_profiler.py", '"profile",\n            "--artefact"'),),
        parser="serflow_runtime.cli:parser",
    ),
    Traced(
        r"\.venv/bin/python examples/own_model\.py my-model/",
        "tests/runtime/test_own_network.py (the example, then its profile and its plan)",
        (
            ("tests/runtime/test_own_network.py", '"examples" / "own_model.py"'),
            ("tests/runtime/test_own_network.py", 'serflow_main(["plan", "-f", str(profile)])'),
        ),
    ),
    Traced(
        r"serflow plan -f my-model\.yaml",
        "tests/runtime/test_own_network.py (the plan of the example's profile)",
        (("tests/runtime/test_own_network.py", 'serflow_main(["plan", "-f", str(profile)])'),),
    ),
    Traced(
        r"serflow plan -f my-resnet\.yaml",
        "tests/runtime/test_profiler.py (what the profile command writes is read as a "
        "workload, as serflow plan reads it)",
        (("tests/runtime/test_profiler.py", "w = read_workload(str(out))"),),
    ),
)


def traced(cmd: Command) -> Traced | None:
    return next((t for t in TRACED if re.fullmatch(t.pattern, cmd.text)), None)


def check_traced(cmd: Command, t: Traced) -> list[str]:
    """Why ``t`` does not cover ``cmd`` (nothing when it does)."""
    out = []
    for name, needle in t.evidence:
        path = REPO / name
        if not path.is_file():
            out.append(f"{cmd.where()}: {name} (named as running it) does not exist")
        elif needle not in path.read_text():
            out.append(f"{cmd.where()}: {name} no longer contains {needle!r}")
    if t.parser:
        module, _, func = t.parser.partition(":")
        parser = getattr(__import__(module, fromlist=[func]), func)()
        try:
            parser.parse_args(list(cmd.argv[1:]))
        except SystemExit:
            out.append(f"{cmd.where()}: its arguments do not parse ({t.parser})")
    return out


# -- running the cheap ones --------------------------------------------------------------


def program(name: str) -> str:
    """A documented program's path here: the repository's .venv, else this interpreter's."""
    base = Path(name).name
    if base in ("python", "python3"):
        return sys.executable
    for candidate in (REPO / ".venv" / "bin" / base, Path(sys.executable).parent / base):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(base)
    if found is None:
        raise FileNotFoundError(f"{name}: not installed here")
    return found


def runnable(cmd: Command) -> bool:
    argv = cmd.argv
    if Path(argv[0]).name == "serflow":
        return True
    if Path(argv[0]).name in ("python", "python3") and argv[1:3] == ("-m", "serflow.schemas"):
        return len(argv) == 3
    return argv[:2] == ("make", "simulate") and len(argv) == 2


SERFLOW_SCRIPT = 'serflow = "serflow.cli:main"'
"""The console script the documents call, as pyproject.toml declares it."""
OUTPUT_FLAGS = {"-o", "--output", "--out", "--plot"}
SHARED_TRACE = "../shared/"


@dataclass
class Sandbox:
    """Where one document's commands write, and what they wrote (a later command of the
    same document may read it)."""

    folder: Path
    written: dict[str, Path] = field(default_factory=dict)

    def output(self, name: str) -> str:
        path = self.folder / f"{len(self.written)}-{Path(name).name}"
        self.written[name] = path
        return str(path)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The command with its outputs in the sandbox and its inputs found: a file an
        earlier command wrote, or, when the project's shared traces are not beside the
        repository, the synthetic trace."""
        out = [argv[0]]
        after = ""
        for arg in argv[1:]:
            if after in OUTPUT_FLAGS or arg.startswith("out/"):
                arg = self.output(arg)
            elif arg in self.written:
                arg = str(self.written[arg])
            elif after == "--trace" and arg.startswith(SHARED_TRACE) and not (REPO / arg).exists():
                arg = "synthetic"
            out.append(arg)
            after = arg
        return out


def run(cmd: Command, box: Sandbox) -> list[str]:
    """Run ``cmd`` from the repository root; what went wrong, if anything.

    ``serflow`` runs in this process, through its console script's entry point
    (``serflow.cli:main``): one import of numpy and matplotlib instead of one a command.
    """
    if cmd.argv[0] == "make":  # make simulate: its recipe's serflow lines, run here
        dry = subprocess.run(["make", "-n", *cmd.argv[1:]], cwd=REPO, capture_output=True,
                             text=True, timeout=TIMEOUT_S, check=False)  # fmt: skip
        if dry.returncode != 0:
            return [f"{cmd.where()}: make -n failed: {dry.stderr.strip()}"]
        lines = [shlex.split(line) for line in dry.stdout.splitlines() if "serflow " in line]
        recipe = [a for a in lines if a and Path(a[0]).name == "serflow"]
        if not recipe:
            return [f"{cmd.where()}: make -n printed no serflow command"]
        return [p for argv in recipe for p in run(Command(cmd.doc, cmd.line, tuple(argv)), box)]
    argv = box.argv(cmd.argv)
    if Path(cmd.argv[0]).name == "serflow":
        assert SERFLOW_SCRIPT in (REPO / "pyproject.toml").read_text()
        err = io.StringIO()
        with contextlib.chdir(REPO), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(err):  # fmt: skip
            try:
                rc = serflow_main(argv[1:])
            except SystemExit as e:  # argparse
                rc = e.code if isinstance(e.code, int) else 2
        if rc != 0:
            return [f"{cmd.where()}: exit {rc}: {err.getvalue().strip()[-500:]}"]
        return []
    with open(box.output(cmd.stdout_to) if cmd.stdout_to else os.devnull, "w") as out:
        r = subprocess.run([program(argv[0]), *argv[1:]], cwd=REPO, stdout=out,
                           stderr=subprocess.PIPE, text=True, timeout=TIMEOUT_S,
                           check=False)  # fmt: skip
    if r.returncode != 0:
        return [f"{cmd.where()}: exit {r.returncode}: {r.stderr.strip()[-500:]}"]
    return []


def repo_paths_missing(cmd: Command) -> list[str]:
    """Files of the repository a command names (an example, a chart, a profile, a Makefile
    variable's value) that do not exist."""
    out = []
    for arg in cmd.argv[1:]:
        value = arg.partition("=")[2] if re.match(r"[A-Z_]+=", arg) else arg
        named = re.match(r"(examples|charts|images|operator|hack|bench|crds)/", value)
        if named and not (REPO / value).exists() and cmd.stdout_to != arg:
            out.append(f"{cmd.where()}: {value}: no such file in the repository")
    if cmd.argv[0].startswith("hack/") and not (REPO / cmd.argv[0]).is_file():
        out.append(f"{cmd.where()}: {cmd.argv[0]}: no such script")
    return out


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))


def make_missing(cmd: Command) -> list[str]:
    if cmd.argv[0] != "make":
        return []
    targets = [a for a in cmd.argv[1:] if "=" not in a and not a.startswith("-")]
    known = make_targets()
    return [f"{cmd.where()}: no Makefile target {t!r}" for t in targets if t not in known]


def uncovered(cmds: Iterable[Command]) -> tuple[list[str], list[Command]]:
    """Problems with the commands that are not run, and the commands to run."""
    problems: list[str] = []
    to_run: list[Command] = []
    for cmd in cmds:
        problems += repo_paths_missing(cmd) + make_missing(cmd)
        t = traced(cmd)
        if t is not None:
            problems += check_traced(cmd, t)
        elif runnable(cmd):
            to_run.append(cmd)
        else:
            problems.append(
                f"{cmd.where()}: neither run by tests/test_docs.py nor in its TRACED table"
            )
    return problems, to_run


# -- the tests ---------------------------------------------------------------------------


def all_fences(docs: Sequence[Path] = DOCS) -> list[Fence]:
    return [f for doc in docs for f in fences(doc)[0]]


def untagged(docs: Sequence[Path] = DOCS) -> list[str]:
    return [f"{shown(f.doc)}:{f.line}: a fence without a language (sh for commands, text "
            "for output)" for f in all_fences(docs) if not f.language]  # fmt: skip


def shell_commands(docs: Sequence[Path] = DOCS) -> list[Command]:
    return [c for f in all_fences(docs) if f.language in SHELL_LANGUAGES for c in commands(f)]


def test_links_resolve() -> None:
    problems = [p for doc in DOCS for p in broken_links(doc)]
    assert not problems, "\n".join(problems)


def test_no_path_of_this_machine() -> None:
    machine = re.compile(r"(?<![\w.~-])/(work|root|home|tmp)/")
    found = [f"{shown(doc)}:{n}: {line.strip()}" for doc in DOCS
             for n, line in enumerate(doc.read_text().splitlines(), 1) if machine.search(line)]  # fmt: skip
    assert not found, "\n".join(found)


def test_every_fence_names_its_language() -> None:
    problems = untagged()
    assert not problems, "\n".join(problems)


def test_every_command_is_run_or_traced(tmp_path: Path) -> None:
    cmds = shell_commands()
    assert len(cmds) > 20, [c.where() for c in cmds]  # the parser found the documents' commands
    problems, to_run = uncovered(cmds)
    boxes: dict[Path, Sandbox] = {}
    for cmd in to_run:  # in order: a command may read what one before it wrote
        if cmd.doc not in boxes:
            boxes[cmd.doc] = Sandbox(tmp_path / cmd.doc.stem)
            boxes[cmd.doc].folder.mkdir()
        problems += run(cmd, boxes[cmd.doc])
    assert not problems, "\n".join(problems)


def test_fast_tier_is_inside_make_test() -> None:
    """``make test-fast`` is traced to ``make test``: every path it tests is under tests/,
    which ``make test``'s pytest collects, and its lint lines are ``make test``'s too."""
    text = (REPO / "Makefile").read_text()
    fast = re.search(r"^FAST_TESTS := (.*?)(?<!\\)\n", text, flags=re.M | re.S)
    assert fast is not None
    paths = fast.group(1).replace("\\\n", " ").split()
    assert paths and all((REPO / p).exists() and p.startswith("tests/") for p in paths), paths

    def recipe(target: str) -> list[str]:
        m = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, flags=re.M)
        assert m is not None, target
        return [line.strip() for line in m.group(1).splitlines()]

    assert set(recipe("test-fast")[:2]) <= set(recipe("test")), (
        recipe("test-fast"),
        recipe("test"),
    )
    assert 'testpaths = ["tests"]' in (REPO / "pyproject.toml").read_text()


# -- the checks can fail -----------------------------------------------------------------


BAD_DOC = """# A page

A [link](nowhere.md), an [anchor](#no-such-heading) and [one that works](#a-page).

```sh
.venv/bin/serflow plan -f preset:paper
curl http://example.com/install.sh | sh
make no-such-target
```

```
untagged
```
"""


def test_the_checks_fail_on_a_bad_page(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(BAD_DOC)
    assert broken_links(page, root=tmp_path) == [
        "page.md:3: nowhere.md: no such file",
        "page.md:3: #no-such-heading: no heading #no-such-heading in page.md",
    ]
    assert untagged([page]) == [
        "page.md:11: a fence without a language (sh for commands, text for output)"
    ]
    problems, to_run = uncovered(shell_commands([page]))
    assert [c.text for c in to_run] == [".venv/bin/serflow plan -f preset:paper"]
    assert problems == [
        "page.md:7: curl http://example.com/install.sh: neither run by tests/test_docs.py "
        "nor in its TRACED table",
        "page.md:7: sh: neither run by tests/test_docs.py nor in its TRACED table",
        "page.md:8: make no-such-target: no Makefile target 'no-such-target'",
        "page.md:8: make no-such-target: neither run by tests/test_docs.py nor in its TRACED table",
    ]
    failing = Command(page, 1, (".venv/bin/serflow", "plan", "-f", "no-such-file.yaml"))
    assert run(failing, Sandbox(tmp_path))[0].startswith("page.md:1: .venv/bin/serflow plan")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('eval "$(hack/kind.sh env)"', [("hack/kind.sh", "env")]),
        (
            "hack/kind.sh down && hack/docker.sh down",
            [("hack/kind.sh", "down"), ("hack/docker.sh", "down")],
        ),
        ("a --set 'x={a,b}'  # comment", [("a", "--set", "x={a,b}")]),
    ],
)
def test_commands_are_split_as_a_shell_would(line: str, expected: list[tuple[str, ...]]) -> None:
    fence = Fence(REPO / "README.md", 1, "sh", ((2, line),))
    assert [c.argv for c in commands(fence)] == expected
