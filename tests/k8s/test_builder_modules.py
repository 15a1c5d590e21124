"""The builders by child kind, read from their imports: each kind's module reaches only the
modules below it, none reaches the controller or a cluster client, and only the
composition (``serflow.k8s.builders``) sees them all."""

from __future__ import annotations

import pytest

from tests.test_imports import G, reached_from

K8S = "serflow.k8s"
BELOW: dict[str, frozenset[str]] = {
    "naming": frozenset(),
    "pods": frozenset(),
    "storage": frozenset({"pods"}),
    "timeouts": frozenset(),
    "policies": frozenset({"naming"}),
    "functions": frozenset({"naming", "pods", "storage", "timeouts"}),
    "pool": frozenset({"naming", "pods", "storage", "timeouts", "functions"}),
    "router": frozenset({"naming", "pods", "storage", "timeouts", "functions", "envoy"}),
}
"""Each child kind's module and the builder modules of ``serflow.k8s`` it may import: the
shared parts at the bottom, the functions below the pool and the router (both call them),
and nothing importing the composition. ``crd`` (the owner's coordinates) is no builder."""
BUILDER_MODULES = frozenset(BELOW) | {"builders", "envoy"}
NO_CLUSTER = ("kubernetes", "kopf", "serflow.controller")


def _k8s_imports(module: str) -> set[str]:
    """The builder modules of ``serflow.k8s`` that ``module`` imports itself."""
    return {
        i.target.removeprefix(f"{K8S}.")
        for i in G[f"{K8S}.{module}"]
        if i.target.removeprefix(f"{K8S}.") in BUILDER_MODULES
    }


@pytest.mark.parametrize("module", sorted(BELOW))
def test_each_child_kind_imports_only_the_builders_below_it(module: str) -> None:
    assert _k8s_imports(module) <= BELOW[module]


def test_every_module_of_the_package_is_placed() -> None:
    # A new builder module must be given its place above, or the layering goes unchecked.
    package = {m.removeprefix(f"{K8S}.") for m in G if m.startswith(f"{K8S}.")}
    assert package == BUILDER_MODULES | {"crd", "jobs"}
    assert _k8s_imports("builders") == set(BELOW)


@pytest.mark.parametrize("module", sorted(BUILDER_MODULES))
def test_the_builders_reach_neither_the_controller_nor_a_cluster_client(module: str) -> None:
    # Pure functions of (spec, plan): the controller calls them, never the reverse.
    bad = [
        chain
        for m, chain in reached_from(G, f"{K8S}.{module}").items()
        if any(m == n or m.startswith(f"{n}.") for n in NO_CLUSTER)
    ]
    assert not bad, "\n".join(" -> ".join(c) for c in bad)
