"""Who a child belongs to and what it is called: the owner reference, the children's names,
the labels that select them and the metadata every child carries.

Every child builder (pool, functions, router, policies) and the profiler's Jobs stamp
their objects through ``meta``, so deleting the SerflowInference garbage-collects all of
them and one label selector (``owned_labels``) finds all of them. It sits below every
builder and imports none of them: the lowest module of ``serflow.k8s``'s builders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serflow.k8s.crd import GROUP, KIND, VERSION


@dataclass(frozen=True)
class Owner:
    """The SerflowInference the children belong to."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Names:
    """Children's names, derived from the object's name."""

    base: str

    @property
    def pool(self) -> str:
        return f"{self.base}-pool"

    @property
    def envoy(self) -> str:
        return f"{self.base}-envoy"

    @property
    def spill(self) -> str:
        return f"{self.base}-spill"

    @property
    def fused_tail(self) -> str:
        return f"{self.base}-tail"

    def stage(self, partition: int) -> str:
        return f"{self.base}-p{partition}"


def owned_labels(owner: Owner) -> dict[str, str]:
    """The labels every child of the object carries: a selector of all of them."""
    return {
        "app.kubernetes.io/name": "serflow",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/managed-by": "serflow",
    }


COMPONENT_LABEL = "app.kubernetes.io/component"


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {**owned_labels(owner), COMPONENT_LABEL: component}


def meta(owner: Owner, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner.reference()],
    }


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controller (its owner reference marked so; Kubernetes
    allows one), or None."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((str(r.get("uid")) for r in refs if r.get("controller")), None)


def service_host(name: str, namespace: str) -> str:
    """The cluster DNS name of a Kubernetes Service."""
    return f"{name}.{namespace}.svc.cluster.local"
