"""A SerflowInference spec: the JSON Schema refuses bad fields in one line, the parsers take
their defaults from it and keep only the cross-field rules."""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any

import pytest

from serflow.errors import InputError
from serflow.fields import Fields
from serflow.inference import (
    FunctionsSpec,
    ProfileSource,
    RoutingSpec,
    fingerprint_mismatch,
    parse_inference,
)
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
    assert inf.model.batch == model["batch"]["default"]
    # The descriptions have no default: one not given is not checked against the profile.
    assert not any("default" in model[k] for k in ("architecture", "numClasses", "width", "exits"))
    assert (inf.model.architecture, inf.model.num_classes, inf.model.width) == ("", None, None)
    assert inf.model.exits == (2, 4, 7)
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


def test_a_model_of_any_family_and_many_stages_is_planned() -> None:
    """K comes from the profile (its stages), not from a family's exit numbering: a
    24-stage model of no family the operator knows is planned."""
    from serflow.policy.configurator import configure


    k = 24
    m = manifest("seq")
    m["spec"]["model"] = {"image": "w:1", "batch": 10}
    inline = m["spec"]["profile"]["inline"]
    inline["fingerprint"] = {"stages": k}
    for c in inline["configs"]:
        c["secondsPerRequest"] = [0.0001 * (i + 1) for i in range(k)]
    inline["cuts"] = [{"after": a, "activationBytes": 512, "transferSeconds": 1e-4} for a in range(1, k)]
    for t in inline["thresholds"]:
        t["exitShares"] = [1.0 / k] * k
    w = parse_workload(m)
    assert w.profile.partitions == k and w.profile.fingerprint.exits == ()
    plan = configure(w, 10.0)
    assert plan.chosen is not None
    assert {c.setup.cut for c in plan.candidates if c.setup.cut} == set(range(1, k))
    inf = parse_inference(m["spec"], "seq")
    assert fingerprint_mismatch(inf.model, w.profile) == ""


def test_a_profile_says_k_once() -> None:


    m = manifest("seq")
    m["spec"]["profile"]["inline"]["fingerprint"] = {"stages": 5, "exits": [2, 4, 6]}
    with pytest.raises(InputError, match="3 exits describe 4 stages, not 5"):
        parse_workload(m)
    m["spec"]["profile"]["inline"]["fingerprint"] = {"architecture": "x"}
    with pytest.raises(InputError, match="set stages"):
        parse_workload(m)


def test_the_combinations_to_cost_are_bounded() -> None:
    """Each list is bounded alone; their product too, so that many stages cannot multiply
    the configurator's work past what one object may cost."""
    from serflow_testbed.manifests import largest_manifest

    m = largest_manifest()
    parse_workload(m)  # K = 13 at every list's maximum: the bound itself
    spec = m["spec"]
    inline = spec["profile"]["inline"]
    k = 14
    inline["fingerprint"] = {"stages": k}
    spec["model"].pop("exits")
    for c in inline["configs"]:
        c["secondsPerRequest"] = [0.01] * k
    inline["cuts"] = [{"after": a, "activationBytes": 16000, "transferSeconds": 0.002} for a in range(1, k)]
    for t in inline["thresholds"]:
        t["exitShares"] = [1.0 / k] * k
    with pytest.raises(InputError, match="14 stages x 32 taus x 16 instance types x 16 function sizes"):
        parse_workload(m)
