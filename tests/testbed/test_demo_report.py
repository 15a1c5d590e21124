"""The demos' one report, rendered from made-up numbers: each line the two demos share
says what the inputs say, and each demo's own sections land where they belong (each
demo's ``report`` run on made-up runs, simulate replaced by a fixed prediction)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from serflow_testbed import demo, demo_report, kind_demo
from serflow_testbed.decide import Bill, Life, Record, summarise
from serflow_testbed.demo_report import Prediction, Replay, Sections
from serflow_testbed.kind import Drops
from serflow_testbed.podbill import FUNCTION, POOL, FunctionUse

SPEC: dict[str, Any] = {
    "scaling": {"epochSeconds": 2, "ewma": {"a": 0.5, "b": 0.5}, "k": 1},
    "slo": {"latencySeconds": 3},
    "thresholds": [0.5],  # the plan's tau wins over the spec's first threshold
    "prices": {
        "mode": "per-use",
        "instances": [{"name": "c6i.large", "perHour": 0.09}],
        "functions": {"perGBSecond": 0.01, "perInvocation": 0.000002,
                      "sizes": [{"name": "fn-2048", "memoryMiB": 2048}]},
    },
}
PLAN = {"pool": "iaas", "instance": "c6i.large", "function": "fn-2048", "cut": 0,
        "mu": 50.0, "tcip": 21.0234, "tau": 0.85}  # fmt: skip
PROFILE = {"thresholds": [{"tau": 0.5, "accuracy": 0.9}, {"tau": 0.85, "accuracy": 0.9956}]}
RECORDS = [
    Record(0, 0.1, 0.5, 200, "pool", 1, True),
    Record(0, 0.2, 1.0, 200, "pool", 2, True),
    Record(1, 2.1, 6.0, 200, "function", 1, False),  # past D + SLO = 5 s
    Record(1, 2.2, 0.0, 503),
]
TIMELINE = [
    {"epoch": 0, "ewma": 1.0, "deviation": 1.0, "target": 8.0, "desired": 1, "ready": 0},
    {"epoch": 1, "ewma": 1.0, "deviation": 2.0, "target": 10.0, "desired": 2, "ready": 1},
]
BILL = Bill(instance_seconds=100.0, function_seconds=0.5, invocations=2,
            instance_cost=0.002, function_cost=0.0005)  # fmt: skip
PRED = Prediction(
    fill={"requests": 4, "sloAttainment": 1.0, "poolRequests": 3, "faasRequests": 1,
          "instanceSeconds": 90.0, "functionSeconds": 0.2, "instanceCost": 0.0018,
          "functionCost": 0.0002, "totalCost": 0.002,
          "phaseRange": {"phases": 3, "cheapest": 0.002, "dearest": 0.0022}},
    envoy={"poolRequests": 2, "faasRequests": 2, "totalCost": 0.00225},
)  # fmt: skip
KIND = Sections(
    where=" on kind",
    scaled=" (busiest epoch 24 req/s)",
    setup=" Its profile: calibrated.",
    notes=["Billed from what ran: pods."],
    footer=["", "Nothing leaves the machine: 0 packets dropped."],
    ready="pool pods",
)


def replay(scale: float = 0.131) -> Replay:
    return Replay("synthetic trace", [2, 2], scale, SPEC, PLAN, PROFILE, RECORDS, TIMELINE)


def render(sections: Sections, scale: float = 0.131) -> list[str]:
    r = replay(scale)
    md = demo_report.markdown(r, summarise(r.records, r.bound_s), BILL, PRED, "timeline.png", sections)
    assert md.endswith("\n") and not md.endswith("\n\n")
    return md.split("\n")[:-1]


def test_the_first_line_says_what_was_replayed_and_the_plan() -> None:
    assert render(KIND)[0] == (
        "Replay on kind: synthetic trace, 2 epochs of 2 s scaled by 0.131 (busiest epoch 24 "
        "req/s), tau 0.85, SLO 3 s (a request meets it when answered within D + SLO = 5 s, "
        "client-measured). The operator's plan: iaas [c6i.large] + faas [fn-2048], cut 0, mu "
        "50 req/s, T-CIP 21.02 req/s. Its profile: calibrated."
    )
    assert render(Sections(), scale=0.6)[0] == (
        "Replay: synthetic trace, 2 epochs of 2 s scaled by 0.6, tau 0.85, SLO 3 s (a request "
        "meets it when answered within D + SLO = 5 s, client-measured). The operator's plan: "
        "iaas [c6i.large] + faas [fn-2048], cut 0, mu 50 req/s, T-CIP 21.02 req/s."
    )


def test_the_table_sets_the_measured_beside_simulate() -> None:
    lines = render(KIND)
    table = lines[lines.index("| | measured | simulate |") :]
    assert table[2:13] == [
        "| requests | 4 | 4 |",
        "| failed requests | 1 | - |",
        "| SLO attainment | 50.00% | 100.00% |",  # the 6 s answer and the 503 miss it
        "| latency p50 / p99 | 1000 / 6000 ms | - |",
        "| accuracy | 66.67% (profiled 99.56%) | - |",  # the profile's at the plan's tau
        "| served by the pool / functions | 2 / 1 (66.7% pool) | 3 / 1 (75.0% pool) |",
        "| instance-seconds | 100.0 | 90.0 |",
        "| function-seconds | 0.50 | 0.20 |",
        "| instance cost | $0.002000 | $0.001800 |",
        "| function cost | $0.000500 | $0.000200 |",
        "| **total cost** | **$0.002500** | **$0.002000** (+25.0% measured vs predicted) |",
    ]


def test_the_gaps_are_split_and_set_against_each_prediction() -> None:
    lines = render(KIND)
    assert (
        "Where measured and predicted differ: instances +0.000200 $ (100.0 against 90.0 "
        "instance-seconds); functions +0.000300 $ (2 against 1 spilled requests, 250.00 "
        "against 200.00 ms billed per request)."
    ) in lines  # 2: the bill's invocations, not the client's 1 function answer
    assert (
        "Routed as the operator routes (`serflow simulate --routing envoy`: Envoy sends the "
        "pool min(1, ready x mu / EWMA) of the traffic, a worker sheds past its budget), "
        "simulate predicts 2 / 2 requests on the pool / functions and $0.002250 "
        "(+11.1% measured vs that prediction)."
    ) in lines
    assert (
        "Over the 3 scaling-tick phases simulate predicts $0.002000 to $0.002200 (the "
        "table's is phase 0); the measured bill is +13.6% from its nearer end."
    ) in lines
    (estimate,) = [x for x in lines if x.startswith("Traffic estimate")]
    assert "the operator's deviation 1.5 req/s and target 9.0 req/s" in estimate


def test_each_demos_sections_land_in_their_place() -> None:
    lines = render(KIND)
    i = lines.index("Exits per classifier: 1: 2, 2: 1. Requests failed by status: {'503': 1}.")
    assert lines[i + 1 :] == [
        "Billed from what ran: pods.",
        "",
        "![timeline](timeline.png)",
        "",
        "Nothing leaves the machine: 0 packets dropped.",
    ]
    local = render(Sections(notes=["Function profile: local."]))
    assert local[-4:] == [
        "Exits per classifier: 1: 2, 2: 1. Requests failed by status: {'503': 1}.",
        "Function profile: local.",
        "",
        "![timeline](timeline.png)",
    ]


def test_write_makes_the_three_files_and_fails_on_a_failed_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = replay()
    rc = demo_report.write(tmp_path, r, BILL, PRED, KIND, {"peakRate": 24.0})
    assert rc == 1  # one request was answered 503
    md = (tmp_path / "report.md").read_text()
    assert md == demo_report.markdown(r, summarise(r.records, r.bound_s), BILL, PRED,
                                      "timeline.png", KIND)  # fmt: skip
    assert md in capsys.readouterr().out
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["peakRate"] == 24.0 and res["tau"] == 0.85 and res["scale"] == 0.131
    assert res["failuresByStatus"] == {"503": 1}
    assert res["gap"] == pytest.approx(0.25) and res["gapEnvoyRouting"] == pytest.approx(1 / 9)
    assert res["profiledAccuracy"] == 0.9956 and res["poolReadyAtStart"] == 0
    assert (tmp_path / "timeline.png").read_bytes().startswith(b"\x89PNG")


def test_prices_follow_the_plan() -> None:
    p = demo_report.prices_of({"spec": SPEC}, PLAN)
    assert p.instance_per_s == pytest.approx(0.09 / 3600)
    assert p.function_per_s == pytest.approx(2 * 0.01)
    assert p.per_invocation == 0.000002 and not p.per_pod
    assert demo_report.prices_of({"spec": SPEC}, {**PLAN, "instance": None}).instance_per_s == 0


class FakePods:
    """What kind's report reads from its pod watch: one pool pod, two function pods."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def ready_at(self, role: str, t: float) -> int:
        return 1 if role == POOL else 0

    def function_use(self) -> FunctionUse:
        return FunctionUse(seconds=0.5, answers=2)

    def cold_starts(self, role: str) -> list[float]:
        return [2.9, 3.2] if role == POOL else [2.5]

    def lives(self) -> list[Life]:
        return [Life(POOL, "p0", 0.0), Life(FUNCTION, "f0", 1.0, 2.0), Life(FUNCTION, "f1", 1.5)]


def fake_predict(manifest: Path, trace: Path, epochs: int, start_pool: int = 0) -> Prediction:
    assert manifest.is_file() and epochs == 2
    return PRED


def test_kind_hands_its_own_sections_to_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    starts: list[int] = []

    def predict(manifest: Path, trace: Path, epochs: int, start_pool: int = 0) -> Prediction:
        starts.append(start_pool)
        return fake_predict(manifest, trace, epochs)

    monkeypatch.setattr(kind_demo, "predict", predict)
    m = {"metadata": {"name": "digits"}, "spec": {**SPEC, "profile": {"fromJob": {}}}}
    run = kind_demo.Served(RECORDS, TIMELINE, 0.0, 4.0, PLAN, FakePods(), PROFILE)  # type: ignore[arg-type]
    given = kind_demo.Inputs([2, 2], 0.131, "synthetic trace", m)
    drops = Drops((), 0, ("10.244.0.0/16",))
    rc = kind_demo.report(argparse.Namespace(peak_rate=24.0), tmp_path, m, [2, 2], run,
                          tmp_path / "trace.txt", given, "calibrated here", drops)  # fmt: skip
    assert rc == 1 and starts == [1]  # simulate starts from the pool Ready at the start
    lines = (tmp_path / "report.md").read_text().split("\n")
    assert lines[0].startswith("Replay on kind: synthetic trace, 2 epochs of 2 s scaled by 0.131 "
                               "(busiest epoch 24 req/s), tau 0.85,")  # fmt: skip
    assert lines[0].endswith(" Its profile: the operator's Jobs measured the partitions; calibrated here.")
    assert lines[-6:] == [
        "Billed from what ran: instances for their pool pods' lives (creation to removal, cold "
        "start and drain included; up to 1 at once); the function for its own seconds per answer "
        "(`serflow_request_seconds` read from each function pod: 2 answers, 0.50 s); up to 2 "
        "function pods at once. Cold starts as observed (pod created to Ready): pool pods 2, "
        "median 3.0 s (from 2.9 to 3.2 s); function pods 1, median 2.5 s (from 2.5 to 2.5 s).",
        "",
        "![timeline](timeline.png)",
        "",
        "Nothing leaves the machine: the kind network's drop rule stopped nothing.",
        "",
    ]
    applied = yaml.safe_load((tmp_path / "applied-with-measured-profile.yaml").read_text())
    assert applied["spec"]["profile"] == {"inline": PROFILE}
    res = json.loads((tmp_path / "results.json").read_text())
    assert (res["peakRate"], res["functionAnswers"], res["poolReadyAtStart"]) == (24.0, 2, 1)


def test_the_local_demo_hands_its_function_profile_to_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "predict", fake_predict)
    m = {"spec": {**SPEC, "profile": {"inline": PROFILE}, "functions": {"maxScale": 3}}}
    state = {
        "lives": [{"kind": "instance", "name": "w0", "start": 0.0}],
        "fnExecSeconds": 0.5, "fnRequests": 2, "fnWallSeconds": 1.25, "fnUntimed": 0,
        "workerColdStarts": [4.2], "fnColdStarts": [0.9], "fnServingCpuSeconds": 0.4,
    }  # fmt: skip
    run = demo.Served(RECORDS, TIMELINE, 0.0, 4.0, state, PLAN)
    alone = demo.FunctionMeasure(0.42, 0.00058, 0.00143)
    fn = demo.FunctionMeasure(0.89, 0.00189, 0.003)
    a = argparse.Namespace(scale=0.6, calibration_epochs=4, cold_start=4.0)
    manifest = tmp_path / "applied.yaml"
    manifest.write_text("{}")
    rc = demo.report(a, tmp_path, m, [2, 2], run, manifest, tmp_path / "trace.txt",
                     "synthetic trace", fn, alone)  # fmt: skip
    assert rc == 1
    lines = (tmp_path / "report.md").read_text().split("\n")
    assert lines[0].startswith("Replay: synthetic trace, 2 epochs of 2 s scaled by 0.6, tau 0.85,")
    i = lines.index("Exits per classifier: 1: 2, 2: 1. Requests failed by status: {'503': 1}.")
    assert lines[i + 1].startswith(
        "Function profile given to the operator and to simulate: cold start 0.89 s, 1.89 ms of "
        "its own per spilled image, measured in an unbilled calibration replay of the first 2 "
        "epochs on the running stack (a function alone, back-to-back requests: 0.58 ms of its "
        "own, 1.43 ms round trip, cold start 0.42 s); cold starts during the run: 0.90 s (up to "
        "0 function processes at once; max-scale 3, containerConcurrency 1)."
    )
    assert lines[i + 1].endswith("Worker cold starts (configured 4 s): 4.2 s.")
    assert lines[i + 2 :] == ["", "![timeline](timeline.png)", ""]
    res = json.loads((tmp_path / "results.json").read_text())
    # The bill: the worker's 4 s at $0.09/h, the functions' 0.5 s at 2 GB x $0.01/GB-s and
    # two invocations.
    assert res["measured"]["total"] == pytest.approx(4 * 0.09 / 3600 + 0.5 * 0.02 + 2 * 0.000002)
    assert res["calibrationEpochs"] == 2 and res["functionMaxScale"] == 3  # 2 epochs replayed
