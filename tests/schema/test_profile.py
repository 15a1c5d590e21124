"""The profile and price-sheet schema: round trips, the JSON Schema, and one-line errors."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import jsonschema
import pytest
import yaml

from serflow.errors import InputError
from serflow.presets import (
    preset_names,
    preset_text,
    vgg16_activation_bytes,
    vgg16_partition_shares,
)
from serflow.profile import parse_prices, parse_profile, prices_to_dict, profile_to_dict
from serflow.schemas import profile_document_schema, schema_json
from serflow.spec import parse_workload
from tests.policy.helpers import paper_doc, tiny_doc


def test_round_trip() -> None:
    doc = paper_doc()
    p = parse_profile(doc["profile"])
    assert parse_profile(profile_to_dict(p)) == p
    s = parse_prices(doc["prices"])
    assert parse_prices(prices_to_dict(s)) == s


def test_survival_from_exit_shares() -> None:
    p = parse_profile(tiny_doc()["profile"])
    assert p.threshold(0.5).survival == (1.0, 0.5)
    assert p.threshold(0.9).survival == pytest.approx((1.0, 0.9))


def test_published_schema_file_is_current() -> None:
    shipped = resources.files("serflow.schemas").joinpath("profile.schema.json").read_text()
    assert shipped == schema_json(), (
        "regenerate: python -m serflow.schemas > .../profile.schema.json"
    )


def test_presets_validate_against_the_json_schema() -> None:
    schema = profile_document_schema()
    jsonschema.Draft4Validator.check_schema(schema)
    for name in preset_names():
        jsonschema.Draft4Validator(schema).validate(yaml.safe_load(preset_text(name)))


def test_the_published_schema_is_the_one_that_refuses() -> None:
    """A bound of the published file (not restated anywhere in the parsers) is enforced."""
    shipped = json.loads(
        resources.files("serflow.schemas").joinpath("profile.schema.json").read_text()
    )
    cuts = shipped["properties"]["profile"]["properties"]["cuts"]
    doc = paper_doc()
    doc["profile"]["cuts"] = doc["profile"]["cuts"] * (cuts["maxItems"] // 10 + 1)
    assert len(doc["profile"]["cuts"]) > cuts["maxItems"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(shipped).validate(doc)
    with pytest.raises(InputError) as e:
        parse_workload(doc)
    assert str(e.value) == (
        f"profile.cuts: expected at most {cuts['maxItems']} items, got {len(doc['profile']['cuts'])}"
    )


def test_paper_preset_derived_numbers() -> None:
    """Runtimes are the paper's batch totals split by VGG-16's MAC shares; cuts are halved fp32."""
    doc = paper_doc()
    exits = tuple(doc["profile"]["fingerprint"]["exits"])
    shares = vgg16_partition_shares(exits)
    assert len(shares) == 11 and sum(shares) == pytest.approx(1.0)
    totals = {"c6i.xlarge": 5.5, "c6i.large": 10.3, "fn-8845mb": 4.3}
    for cfg in doc["profile"]["configs"]:
        want = [totals[cfg["name"]] / 100 * s for s in shares]
        assert cfg["secondsPerRequest"] == pytest.approx(want, rel=1e-12)
    for cut in doc["profile"]["cuts"]:
        raw = vgg16_activation_bytes(cut["after"])
        assert cut["activationBytes"] == raw // 2
        assert cut["transferSeconds"] == pytest.approx(raw / 2 / 50e6)
    # DESIGN.md: cut tensors of 8 to 64 KiB for the default IC placement (after blocks 2..10)
    assert [vgg16_activation_bytes(b) // 1024 for b in (2, 4, 6, 7, 9, 10)] == [
        64,
        32,
        64,
        16,
        32,
        8,
    ]


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node: Any = doc
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


BAD = [
    (
        "profile.configs.0.secondsPerRequest.2",
        -1,
        "profile.configs[0].secondsPerRequest[2]: expected a number >= 0, got -1",
    ),
    (
        "profile.configs.0.secondsPerRequest",
        [0.1],
        "profile.configs[0].secondsPerRequest: expected 11 values (one per partition), got 1",
    ),
    (
        "profile.configs.0.secondsPerRequest",
        KeyError,
        "profile.configs[0].secondsPerRequest: missing",
    ),
    (
        "profile.configs.0.kind",
        "vm",
        "profile.configs[0].kind: expected one of instance, function, got 'vm'",
    ),
    (
        "profile.configs.0.vcpu",
        float("inf"),
        "profile.configs[0].vcpu: expected a number > 0 and <= 1024, got inf",
    ),
    (
        "profile.configs.0.vcpu",
        float("nan"),
        "profile.configs[0].vcpu: expected a number > 0 and <= 1024, got nan",
    ),
    ("profile.fingerprint", [2], "profile.fingerprint: expected a mapping, got a list"),
    (
        "profile.fingerprint.exits.0",
        1.5,
        "profile.fingerprint.exits[0]: expected an integer >= 1, got 1.5",
    ),
    (
        "prices.functions.sizes.0.name",
        "f" * 300,
        "prices.functions.sizes[0].name: expected at most 63 characters, got 300",
    ),
    (
        "profile.thresholds.0.exitShares.0",
        0.9,
        "profile.thresholds[0].exitShares: expected shares summing to 1, got 1.6",
    ),
    (
        "profile.thresholds.0.tau",
        1.5,
        "profile.thresholds[0].tau: expected a number > 0 and <= 1, got 1.5",
    ),
    (
        "profile.thresholds.0.tau",
        0,
        "profile.thresholds[0].tau: expected a number > 0 and <= 1, got 0",
    ),
    (
        "profile.thresholds.0.tau",
        "high",
        "profile.thresholds[0].tau: expected a number > 0 and <= 1, got 'high'",
    ),
    ("profile.batch", 0, "profile.batch: expected an integer >= 1, got 0"),
    (
        "profile.cuts.0.after",
        11,
        "profile.cuts[0].after: expected a cut between partitions (1..10), got 11",
    ),
    (
        "profile.fingerprint.exits",
        [3, 2],
        "profile.fingerprint.exits: expected strictly increasing block indices",
    ),
    ("prices.functions.sizes", [], "prices.functions.sizes: expected a non-empty list"),
    ("prices.mode", "free", "prices.mode: expected one of per-use, per-pod, got 'free'"),
    (
        "prices.instances.0.name",
        "m5.large",
        "prices.instances[0].name: 'm5.large' has no instance config in the profile",
    ),
    (
        "prices.instances.0.perHour",
        -0.1,
        "prices.instances[0].perHour: expected a number >= 0, got -0.1",
    ),
    ("slo.latencySeconds", 0, "slo.latencySeconds: expected a number > 0, got 0"),
    ("slo.latencySeconds", None, "slo.latencySeconds: expected a number > 0, got nothing"),
    ("slo", KeyError, "slo: missing"),
    ("thresholds", [0.5, 2], "thresholds[1]: expected a number > 0 and <= 1, got 2"),
    ("scaling.intervalEpochs", 0, "scaling.intervalEpochs: expected an integer >= 1 and <= 1000, got 0"),
    ("scaling.policy", "newest", "scaling.policy: expected one of expected-cost, paper, got 'newest'"),
    (
        "kind",
        "Deployment",
        "kind: expected one of Profile, SerflowInference, got 'Deployment'",
    ),
    ("kind", KeyError, "kind: missing"),
    ("prices", KeyError, "prices: missing (a price sheet is needed to plan)"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"), BAD, ids=[b[0] + "=" + str(b[1]) for b in BAD]
)
def test_bad_input_names_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(InputError) as e:
        parse_workload(_set(paper_doc(), path, value))
    assert str(e.value) == message


def test_serflow_inference_manifest_parses_like_the_profile() -> None:
    doc = paper_doc()
    fp = doc["profile"]["fingerprint"]
    model = {"image": "serflow/worker:dev", "exits": fp["exits"], "batch": doc["profile"]["batch"]}
    manifest = {
        "apiVersion": "serflow.io/v1alpha1",
        "kind": "SerflowInference",
        "metadata": {"name": "vgg"},
        "spec": {k: doc[k] for k in ("prices", "slo", "traffic", "scaling")}
        | {"profile": {"inline": doc["profile"]}, "model": model},
    }
    a, b = parse_workload(doc), parse_workload(json.loads(json.dumps(manifest)))
    assert (a.profile, a.prices, a.objective, a.scaling) == (
        b.profile,
        b.prices,
        b.objective,
        b.scaling,
    )


def test_unprofiled_threshold_is_refused() -> None:
    with pytest.raises(InputError, match=r"^thresholds\[0\]: tau 0.6 was not profiled$"):
        parse_workload(_set(paper_doc(), "thresholds", [0.6]))
