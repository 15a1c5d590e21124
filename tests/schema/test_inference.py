"""A SerflowInference spec: the JSON Schema refuses bad fields in one line, the parsers take
their defaults from it and keep only the cross-field rules."""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any

import pytest

from serflow.errors import InputError
from serflow.fields import Fields
from serflow.inference import FunctionsSpec, ProfileSource, RoutingSpec, parse_inference
from serflow.profile import parse_prices
from serflow.schemas import inference_spec_schema
from serflow.spec import ScalingSpec, parse_scaling, parse_workload
from tests.controller.manifests import manifest


def _spec(**changes: Any) -> dict[str, Any]:
    """The test manifest's spec with ``a.b.c=value`` changes (``None`` deletes)."""
    spec = copy.deepcopy(manifest()["spec"])
    for path, value in changes.items():
        node = spec
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return spec


BAD = [
    ({"slo__latencySeconds": "x"}, "spec.slo.latencySeconds: expected a number > 0 and <= 300, got 'x'"),
    ({"model": None}, "spec.model: missing"),
    ({"model__exits": []}, "spec.model.exits: expected a non-empty list"),
    (
        {"model__podAnnotations": {"a": 1}},
        "spec.model.podAnnotations.a: expected a string, got 1",
    ),
    ({"functions__maxScale": 0}, "spec.functions.maxScale: expected an integer >= 1 and <= 1000, got 0"),
    (
        {"routing__statPrefix": "my prefix"},
        "spec.routing.statPrefix: expected a string matching ^[a-zA-Z0-9_]+$, got 'my prefix'",
    ),
    (
        {"routing__statsUrls": ["http://a:9901/stats", "ftp://b"]},
        "spec.routing.statsUrls[1]: expected an http(s) URL with a host and a port in "
        "1..65535, got 'ftp://b'",
    ),
    (
        {"profile__configMapRef": {"name": "p"}},
        "spec.profile: set exactly one of inline, configMapRef or fromJob",
    ),
    (
        {"profile": {"fromJob": {"taus": []}}},
        "spec.profile.fromJob.taus: expected a non-empty list",
    ),
    (
        {"prices__functions__sizes": [{"name": "fn-2048"}]},
        "spec.prices.functions.sizes[0].memoryMiB: missing",
    ),
]


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_spec_field_is_one_line_naming_it(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as e:
        parse_inference(_spec(**changes), "vgg")
    assert str(e.value) == message


def test_cross_field_rule_in_code_names_the_field() -> None:
    with pytest.raises(InputError) as e:
        parse_workload(
            {**manifest(), "spec": _spec(scaling__minInstances=5, scaling__maxInstances=2)}
        )
    assert str(e.value) == "spec.scaling.maxInstances: expected >= minInstances (5), got 2"


def test_defaults_are_the_schemas() -> None:
    """What the API server would fill in is what the parsers fill in, and the dataclasses'."""
    spec = _spec(scaling=None, routing=None, functions=None)
    spec["model"] = {"image": "w:1", "exits": [2, 4, 7]}
    inf = parse_inference(spec, "vgg")
    props = inference_spec_schema()["properties"]
    assert inf.routing == RoutingSpec()
    assert inf.routing.image == props["routing"]["properties"]["image"]["default"]
    assert inf.functions == FunctionsSpec()
    model = props["model"]["properties"]
    assert (inf.model.architecture, inf.model.batch, inf.model.num_classes, inf.model.width) == (
        model["architecture"]["default"],
        model["batch"]["default"],
        model["numClasses"]["default"],
        model["width"]["default"],
    )
    assert inf.model.function_image == "w:1"  # defaults to another field: code, not schema
    assert parse_scaling(Fields({}, "spec.scaling")) == ScalingSpec()
    assert parse_workload({**manifest(), "spec": spec}).scaling == ScalingSpec()
    sheet = parse_prices({"functions": {"perGBSecond": 1, "sizes": [{"name": "f", "memoryMiB": 1}]}})
    assert (sheet.mode.value, sheet.per_invocation, sheet.keep_alive_s) == ("per-use", 0, 300)


def test_profiling_jobs_measure_the_schemas_default_taus() -> None:
    inf = parse_inference(_spec(profile={"fromJob": {}}), "vgg")
    assert inf.profile_source is ProfileSource.JOB
    taus = inference_spec_schema()["properties"]["profile"]["properties"]["fromJob"]
    assert inf.job_taus == tuple(taus["properties"]["taus"]["default"])
    assert inf.configmap_name == "vgg-profile" and inf.job_image == inf.model.image


def test_read_only_views_validate_like_dicts() -> None:
    """The operator passes kopf's read-only view of the spec, not a dict."""
    spec = _spec()
    view = MappingProxyType({**spec, "model": MappingProxyType(spec["model"])})
    assert parse_inference(view, "vgg") == parse_inference(spec, "vgg")
    doc = MappingProxyType({**manifest(), "spec": view})
    assert parse_workload(doc) == parse_workload(manifest())
    with pytest.raises(InputError, match=r"^spec.model.exits: expected a non-empty list$"):
        parse_inference(MappingProxyType({**spec, "model": {"image": "w", "exits": ()}}), "vgg")


@pytest.mark.parametrize(
    ("url", "outside"),
    [
        ("http://127.0.0.1:9901/stats", False),
        ("http://127.8.0.1:9901/stats", False),
        ("http://[::1]:9901/stats", False),
        ("http://localhost:9901/stats", False),
        ("http://vgg-envoy.team-a.svc:9901/stats", False),
        ("http://vgg-envoy.team-a.svc.cluster.local.:9901/stats", False),
        ("http://vgg-envoy.team-b.svc:9901/stats", True),  # another namespace
        ("http://10.0.0.7:9901/stats", True),  # a pod's or a node's address
        ("http://metadata.example.com/stats", True),
        ("http://team-a.svc.evil.example:80/", True),
    ],
)
def test_stats_urls_name_only_what_the_object_owns(url: str, outside: bool) -> None:
    from serflow.inference import stats_url_outside

    said = stats_url_outside(["http://127.0.0.1:1/stats", url], "team-a")
    assert bool(said) is outside, said
    if outside:
        assert said.startswith("spec.routing.statsUrls[1]: ") and "team-a" in said
