"""A plan's children as local processes: the pool worker(s) and the Knative functions run
with the builders' own container args and Envoy with the builders' own bootstrap and
route, with only hosts, ports and URLs rewritten to 127.0.0.1.

Shared by the plan-shape and fault tests and by ``bench/faults.py``: here in the test bed
because ``bench/`` imports nothing from ``tests/``."""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from serflow.inference import InferenceSpec, parse_inference
from serflow.k8s import builders
from serflow.k8s import envoy as render
from serflow.k8s.timeouts import function_attempt_timeout_s
from serflow.policy.configurator import Candidate, Granularity, PoolKind, configure
from serflow.spec import Workload, parse_workload
from serflow_testbed.decide import local_args
from serflow_testbed.harness import REPO, envoy_argv, free_port
from serflow_testbed.servers import Envoy, Proc, wait_ready
from serflow_testbed.servers import spawn as _spawn

EXAMPLE = REPO / "examples" / "digits-demo.yaml"
"""The shipped digits example: its model is the shipped artefact."""

OWNER = builders.Owner("digits", "serving", "uid-1")


@dataclass(frozen=True)
class Shape:
    """A plan shape: the pool kind, the tail's granularity and the cut."""

    pool: PoolKind
    granularity: Granularity | None = None
    cut: int = 0

    @property
    def label(self) -> str:
        g = f"-{self.granularity.value}-cut{self.cut}" if self.granularity else ""
        return f"{self.pool.value}{g}"


def plan(shape: Shape, epoch_s: float = 0.05) -> tuple[InferenceSpec, Workload, Candidate]:
    """The example with a short epoch D (batches close fast) and its candidate of ``shape``."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["scaling"]["epochSeconds"] = epoch_s
    w = parse_workload(copy.deepcopy(doc))
    inf = parse_inference(doc["spec"], OWNER.name)
    for c in configure(w, 50.0).candidates:
        s = c.setup
        if (s.pool, s.granularity) == (shape.pool, shape.granularity) and (
            not shape.cut or s.cut == shape.cut
        ):
            return inf, w, c
    raise AssertionError(f"the example has no candidate of shape {shape}")


@dataclass
class Served:
    """A plan served by local processes."""

    envoy: Envoy
    workers: list[Proc]
    functions: dict[str, Proc]
    """Knative Service name -> its local function process."""
    spills: list[Proc] = field(default_factory=list)
    """The hosts of Envoy's functions cluster: processes of the spill Service."""
    procs: list[Proc] = field(default_factory=list)
    routers: list[Envoy] = field(default_factory=list)
    """Every Envoy (``envoy`` is the first), all on one bootstrap, as a Deployment's
    replicas behind one Service."""
    function_bound_added: bool = False
    """The builders' route had no per-try bound, and ``serve`` added the renderer's
    (``attempt_timeout_s``)."""

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        for e in self.routers:
            if e.proc is not None and e.proc not in self.procs:
                e.proc.stop()

    def restart_router(self, i: int) -> None:
        """Start router ``i`` again (its process has exited) on its ports and bootstrap."""
        _start_envoy(self.routers[i])


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj["spec"]["template"]["spec"]["containers"][0])


def _localize_bootstrap(
    boot: dict[str, Any], upstreams: dict[str, list[tuple[str, int]]], e: Envoy
) -> dict[str, Any]:
    """The builders' bootstrap with its listeners, admin, upstreams and route directory on
    this machine; everything else (cluster types, retries, breakers) kept as built."""
    boot = copy.deepcopy(boot)
    boot["admin"]["address"]["socket_address"] = {
        "address": "127.0.0.1",
        "port_value": e.admin_port,
    }
    ports = {"ingress": e.port, "stats": e.stats_port}
    for lis in boot["static_resources"]["listeners"]:
        lis["address"]["socket_address"] = {
            "address": "127.0.0.1",
            "port_value": ports[lis["name"]],
        }
        for f in lis["filter_chains"][0]["filters"]:
            rds = f["typed_config"].get("rds")
            if rds:
                src = rds["config_source"]["path_config_source"]
                src["path"] = str(e.route_dir / render.ROUTE_FILE)
                src["watched_directory"]["path"] = str(e.route_dir)
    upstreams = {**upstreams, render.CLUSTER_ADMIN: [("127.0.0.1", e.admin_port)]}
    for cl in boot["static_resources"]["clusters"]:
        if "load_assignment" in cl:
            eps = [
                {"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}}}
                for h, p in upstreams[cl["name"]]
            ]
            cl["load_assignment"]["endpoints"] = [{"lb_endpoints": eps}]
    return boot


def _bound_functions(route_text: str, w: Workload) -> str | None:
    """The route with the renderer's per-try bound for a function host that hangs
    (``attempt_timeout_s``), where the builders' route has none (else None)."""
    doc = json.loads(route_text)
    actions = [
        r["route"] for vh in doc["resources"][0]["virtual_hosts"] for r in vh["routes"]
        if "route" in r
    ]  # fmt: skip
    if all("per_try_timeout" in a["retry_policy"] for a in actions):
        return None
    ref = render.route_config(0, attempt_timeout_s=function_attempt_timeout_s(w))
    bound = ref["virtual_hosts"][0]["routes"][0]["route"]["retry_policy"]["per_try_timeout"]
    for a in actions:
        a["retry_policy"]["per_try_timeout"] = bound
    return json.dumps(doc, indent=1)


def _start_envoy(e: Envoy) -> None:
    """Start ``e`` on its bootstrap (``envoy-<port>.yaml`` beside its route directory);
    wait until its stats listener answers."""
    cfg = e.route_dir.parent / f"envoy-{e.port}.yaml"
    log = e.route_dir.parent / f"envoy-{e.port}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(envoy_argv(cfg, e.port), stdout=out, stderr=subprocess.STDOUT)
    e.proc = Proc(proc, e.port, log)
    wait_ready(Proc(proc, e.stats_port, log), "/stats/prometheus")


def serve(
    shape: Shape,
    tmp: Path,
    pool_weight: int,
    workers: int = 1,
    epoch_s: float = 0.05,
    spills: int = 1,
    routers: int = 1,
    traced: bool = False,
    bound_functions: bool = False,
) -> Served:
    """Start the plan's functions, ``workers`` pool workers and ``routers`` Envoys (one
    bootstrap, one route directory); wait until ready. ``spills`` processes of the spill
    Service are the functions cluster's hosts (as the pods behind a Knative Service).
    ``traced``: the servers log each answered request's id (``serflow_testbed.traced``).
    ``bound_functions``: if the builders' route has no per-try bound (for a function host
    that hangs), add the renderer's (``Served.function_bound_added`` says so)."""
    inf, w, cand = plan(shape, epoch_s)
    objs = builders.children(OWNER, inf, w, cand, workers, pool_weight)
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    names = builders.Names(OWNER.name)
    served = Served(Envoy(tmp / "routes", free_port(), free_port(), free_port()), [], {})
    served.routers.append(served.envoy)
    for _ in range(1, routers):
        served.routers.append(Envoy(served.envoy.route_dir, free_port(), free_port(), free_port()))
    module = "serflow_testbed.traced" if traced else "serflow_runtime.cli"

    def spawn(args: list[str], tmp: Path, name: str, port: int) -> Proc:
        return _spawn(args, tmp, name, port, module=module)

    try:
        for st in builders.stages(OWNER, w, cand):
            args = _container(by_kind[("Service", st.name)])["args"]
            port = free_port()
            p = spawn(["function", *local_args(args, port, st.name)], tmp, st.name, port)
            served.procs.append(p)
            served.functions[st.name] = p
            if st.name == names.spill:
                served.spills.append(p)
                for i in range(1, spills):
                    port, name = free_port(), f"{st.name}-{i}"
                    p = spawn(["function", *local_args(args, port, name)], tmp, name, port)
                    served.procs.append(p)
                    served.spills.append(p)
        urls = {n: p.url for n, p in served.functions.items()}
        # The pool's tails name the functions' pinned Revisions.
        for n, p in served.functions.items():
            urls[by_kind[("Service", n)]["spec"]["template"]["metadata"]["name"]] = p.url
        pool_args = _container(by_kind[("Deployment", names.pool)])["args"]
        if shape.pool is not PoolKind.FAAS:
            for i in range(workers):
                name, port = f"{names.pool}-{i}", free_port()
                p = spawn(["worker", *local_args(pool_args, port, name, urls)], tmp, name, port)
                served.procs.append(p)
                served.workers.append(p)
        for p in served.procs:
            wait_ready(p)
        # A FaaS plan has no worker; its pool cluster points at a closed port (weight 0).
        pool_addrs = [("127.0.0.1", p.port) for p in served.workers] or [("127.0.0.1", free_port())]
        cm = by_kind[("ConfigMap", names.envoy)]
        e = served.envoy
        e.route_dir.mkdir()
        route = cm["data"][render.ROUTE_FILE]
        bounded = _bound_functions(route, w) if bound_functions else None
        served.function_bound_added = bounded is not None
        (e.route_dir / render.ROUTE_FILE).write_text(bounded or route)
        for r in served.routers:
            boot = _localize_bootstrap(
                yaml.safe_load(cm["data"]["envoy.yaml"]),
                {
                    render.CLUSTER_POOL: pool_addrs,
                    render.CLUSTER_FUNCTIONS: [("127.0.0.1", p.port) for p in served.spills],
                },
                r,
            )
            (tmp / f"envoy-{r.port}.yaml").write_text(render.to_yaml(boot))
            _start_envoy(r)
            assert r.proc is not None
            if r is e:
                served.procs.append(r.proc)
    except BaseException:
        served.stop()
        raise
    return served
