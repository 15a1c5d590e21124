"""The kind demo's own behaviour, without a cluster: its inputs, checked before anything
starts, and how it reads a bill from pods."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from serflow_testbed import kind_demo
from serflow_testbed.podbill import FUNCTION, POOL, FunctionUse, PodLife, request_seconds, role_of

EXAMPLE = str(kind_demo.REPO / "examples" / "digits-kind.yaml")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--epochs", "0"], "error: --epochs: expected 1 or more, got 0"),
        (["--start", "-1"], "error: --start: expected 0 or more, got -1"),
        (["--calibration-epochs", "-1"], "error: --calibration-epochs: expected 0 or more, got -1"),
        (["--peak-rate", "0"], "error: --peak-rate: expected a finite number > 0, got 0.0"),
        (["--peak-rate", "inf"], "error: --peak-rate: expected a finite number > 0, got inf"),
        (["-f", "{tmp}/none.yaml"], "error: {tmp}/none.yaml: no such file"),
        (["-f", "preset:paper"], "error: preset:paper: expected a SerflowInference, got 'Profile'"),
        (
            ["-f", "{tmp}/no-slo.yaml"],
            "error: {tmp}/no-slo.yaml: spec.slo: missing",
        ),
        (
            ["--trace", "{tmp}/zeros.txt", "--epochs", "2"],
            "error: {tmp}/zeros.txt: lines 0..1 are all zero",
        ),
        (
            ["--trace", "{tmp}/short.txt", "--start", "1", "--epochs", "2"],
            "error: {tmp}/short.txt: 2 lines; --start 1 and --epochs 2 need 3",
        ),
    ],
)
def test_bad_input_is_one_line_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    (tmp_path / "short.txt").write_text("5\n6\n")
    (tmp_path / "zeros.txt").write_text("0\n0\n3\n")
    doc = yaml.safe_load(Path(EXAMPLE).read_text())
    del doc["spec"]["slo"]
    (tmp_path / "no-slo.yaml").write_text(yaml.safe_dump(doc))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--trace" not in argv:
        argv += ["--trace", "synthetic"]
    code = kind_demo.main([*argv, "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out.strip()
    assert code == 2
    assert out == expected.replace("{tmp}", str(tmp_path))


def test_the_trace_is_scaled_so_its_busiest_epoch_is_the_peak_rate(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("10\n40\n20\n100\n")
    a = argparse.Namespace(manifest=EXAMPLE, trace=str(tmp_path / "t.txt"), start=0, epochs=3,
                           peak_rate=20.0, seed=0, calibration_epochs=20)  # fmt: skip
    got = kind_demo.read_inputs(a)
    # epochs of 2 s: the busiest replayed line (40) becomes 40 requests, i.e. 20 req/s
    assert got.scale == 1.0
    assert got.counts == [10, 40, 20]
    a.peak_rate = 5.0
    assert kind_demo.read_inputs(a).counts == [2, 10, 5]


def test_pods_are_billed_by_their_role() -> None:
    labels = "app.kubernetes.io/component"
    assert role_of({labels: "pool"}) == POOL
    assert role_of({labels: "function-spill"}) == FUNCTION
    assert role_of({labels: "function-tail"}) == FUNCTION
    assert role_of({labels: "router"}) is None
    assert role_of({labels: "profiler"}) is None
    assert role_of(None) is None
    life = PodLife("p", POOL, created=100.0, ready=103.5)
    assert life.cold_start == 3.5
    assert PodLife("q", FUNCTION, created=1.0).cold_start is None


def test_function_seconds_are_read_from_the_pods_metrics() -> None:
    text = (
        "# HELP serflow_request_seconds x\n# TYPE serflow_request_seconds histogram\n"
        'serflow_request_seconds_bucket{le="0.01"} 3.0\n'
        'serflow_request_seconds_bucket{le="+Inf"} 4.0\n'
        "serflow_request_seconds_count 4.0\nserflow_request_seconds_sum 0.125\n"
        "# HELP serflow_batch_seconds y\n# TYPE serflow_batch_seconds histogram\n"
        'serflow_batch_seconds_bucket{le="+Inf"} 9.0\n'
        "serflow_batch_seconds_count 9.0\nserflow_batch_seconds_sum 7.0\n"
    )
    assert request_seconds(text) == FunctionUse(seconds=0.125, answers=4)
    assert request_seconds("") == FunctionUse()
