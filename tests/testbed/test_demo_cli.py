"""The demo command's own behaviour, without a cluster."""

from __future__ import annotations

import fcntl
import signal
from pathlib import Path

import pytest

from serflow_testbed import demo


def test_a_second_demo_on_the_same_output_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (tmp_path / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert demo.main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().out.strip() == (
        f"error: another demo is writing to {tmp_path}; pass another --out"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_unwind_even_when_the_shell_ignored_them(sig: signal.Signals) -> None:
    before = signal.signal(sig, signal.SIG_IGN)  # as a shell starts a background job
    try:
        with pytest.raises(KeyboardInterrupt), demo.term_as_interrupt():
            signal.raise_signal(sig)
        assert signal.getsignal(sig) == signal.SIG_IGN  # restored on the way out
    finally:
        signal.signal(sig, before)


EXAMPLE = str(demo.REPO / "examples" / "digits-demo.yaml")


def _write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--epochs", "0"], "error: --epochs: expected 1 or more, got 0"),
        (["--start", "-1"], "error: --start: expected 0 or more, got -1"),
        (["--calibration-epochs", "-1"], "error: --calibration-epochs: expected 0 or more, got -1"),
        (["--scale", "nan"], "error: --scale: expected a finite number >= 0, got nan"),
        (["--cold-start", "-5"], "error: --cold-start: expected a finite number >= 0, got -5.0"),
        (["-f", "{tmp}/none.yaml"], "error: {tmp}/none.yaml: no such file"),
        (["-f", "{tmp}/list.yaml"], "error: {tmp}/list.yaml: expected a mapping, got a list"),
        (["-f", "preset:paper"], "error: preset:paper: expected a SerflowInference, got 'Profile'"),
        (
            ["-f", "{tmp}/two-functions.yaml"],
            "error: {tmp}/two-functions.yaml: spec.profile.inline.configs: "
            "the demo needs exactly one function config, found 2",
        ),
        (["--trace", "{tmp}/none.txt"], "error: {tmp}/none.txt: no such file"),
        (
            ["--trace", "{tmp}/short.txt", "--start", "1", "--epochs", "2"],
            "error: {tmp}/short.txt: 2 lines; --start 1 and --epochs 2 need 3",
        ),
        (["--trace", "{tmp}/bad.txt"], "error: {tmp}/bad.txt:2: "),
    ],
)
def test_bad_input_is_one_line_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    import yaml

    _write(tmp_path, "list.yaml", "- 1\n")
    _write(tmp_path, "short.txt", "5\n6\n")
    _write(tmp_path, "bad.txt", "5\nfive\n")
    doc = yaml.safe_load(Path(EXAMPLE).read_text())
    configs = doc["spec"]["profile"]["inline"]["configs"]
    configs.append({**next(c for c in configs if c["kind"] == "function"), "name": "fn-other"})
    _write(tmp_path, "two-functions.yaml", yaml.safe_dump(doc))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--trace" not in argv:
        argv += ["--trace", "synthetic"]
    code = demo.main([*argv, "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out.strip()
    assert code == 2
    assert out.startswith(expected.replace("{tmp}", str(tmp_path)))
    assert "\n" not in out  # one line: nothing was started


def test_the_report_sets_the_operators_estimate_beside_simulates() -> None:
    scaling = {"epochSeconds": 2, "ewma": {"a": 0.5, "b": 0.5}, "k": 1}
    # simulate, rates 10, 0, 10: dev 0, 5, 5 (mean 3.3); target 10, 10, 12.5 (mean 10.8)
    timeline = [
        {"deviation": 1.0, "target": 8.0},
        {"deviation": 2.0, "target": 10.0},
        {"deviation": None, "target": None},  # a status poll that missed the estimate
    ]
    assert demo.estimates(timeline, [20, 0, 20], 2.0, scaling) == (
        "Traffic estimate, mean over the replay: the operator's deviation 1.5 req/s and "
        "target 9.0 req/s; simulate's 3.3 and 10.8 req/s (EWMA a 0.5, b 0.5, k 1)."
    )
    assert demo.estimates([], [20], 2.0, scaling) == (
        "The operator reported no traffic estimate during the replay."
    )
