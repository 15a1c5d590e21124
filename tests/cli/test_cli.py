"""The CLI as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.policy.helpers import tiny_doc

SHARED_WITS = Path(__file__).resolve().parents[3] / "shared" / "traces" / "wits_logs.txt"


def serflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serflow.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_plan_paper_table() -> None:
    r = serflow("plan", "-f", "preset:paper")
    assert r.returncode == 0, r.stderr
    assert "Chosen: tau 0.5" in r.stdout
    assert "S-CIP" in r.stdout
    assert "worst-case batch 10.3 s > SLO 6 s" in r.stdout  # c6i.large cannot run the whole model


def test_plan_json_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "cip.png"
    r = serflow("plan", "-f", "preset:paper", "--rate", "20", "--json", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rate"] == 20 and out["chosen"]["feasible"]
    assert len(out["candidates"]) == 3 * (
        1 + 2 * (1 + 10 * 2)
    )  # taus x (faas + per vm: iaas + cuts x 2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _manifest(tmp_path: Path, **slo: object) -> Path:
    doc = tiny_doc()
    manifest = {
        "apiVersion": "serflow.io/v1alpha1",
        "kind": "SerflowInference",
        "metadata": {"name": "t"},
        "spec": {k: doc[k] for k in ("prices", "traffic", "scaling")}
        | {
            "profile": {"inline": doc["profile"]},
            "model": {"image": "serflow/worker:dev", "exits": [1], "batch": 10},
            "slo": doc["slo"] | slo,
        },
    }
    f = tmp_path / "sfi.yaml"
    f.write_text(yaml.safe_dump(manifest))
    return f


def test_plan_reads_a_serflow_inference_manifest(tmp_path: Path) -> None:
    f = _manifest(tmp_path)
    r = serflow("plan", "-f", str(f), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rate"] == 2.5


def test_simulate_synthetic_json_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "t.png"
    r = serflow(
        "simulate",
        "-f",
        "preset:paper",
        "--trace",
        "synthetic",
        "--epochs",
        "300",
        "--json",
        "--plot",
        str(png),
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    assert {x["policy"] for x in res} == {"faas", "libra", "serflow", "expected-cost", "bound", "limit"}
    for x in res:
        assert x["poolRequests"] + x["faasRequests"] == x["requests"]
        if x["policy"] == "serflow":
            assert x["ratioToBound"] >= x["ratioToLimit"] >= 1.0 - 1e-9
    assert png.stat().st_size > 10_000


@pytest.mark.skipif(
    not SHARED_WITS.exists(), reason="the shared WITS trace is not beside the repository"
)
def test_simulate_wits_400_epochs() -> None:
    r = serflow("simulate", "-f", "preset:paper", "--trace", str(SHARED_WITS), "--epochs", "400")
    assert r.returncode == 0, r.stderr
    assert "400 epochs of 6 s" in r.stdout
    assert r.stdout.count("serflow") == 3  # one row per tau


def _bad_profile(tmp_path: Path) -> Path:
    doc = tiny_doc()
    doc["profile"]["configs"][0]["secondsPerRequest"] = [0.4, -2]
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(doc))
    return f


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["plan", "-f", "{bad}"],
            "{bad}: profile.configs[0].secondsPerRequest[1]: expected a number >= 0, got -2",
        ),
        (
            ["plan", "-f", "{badsfi}"],
            "{badsfi}: spec.slo.latencySeconds: expected a number > 0 and <= 300, got 'x'",
        ),
        (["plan", "-f", "{tmp}/none.yaml"], "{tmp}/none.yaml: no such file"),
        (["plan", "-f", "{garbage}"], "{garbage}:2: not valid YAML or JSON"),
        (["plan", "-f", "preset:nope"], "preset:nope: no such preset (have: paper)"),
        (
            ["plan", "-f", "preset:paper", "--rate", "-3"],
            "--rate: expected a finite rate >= 0, got -3.0",
        ),
        (
            ["simulate", "-f", "preset:paper", "--trace", "{trace}"],
            "{trace}:3: expected a non-negative integer, got 'x'",
        ),
        (["simulate", "-f", "preset:paper", "--trace", "{empty}"], "{empty}: empty trace"),
        (
            ["simulate", "-f", "preset:paper", "--trace", "synthetic", "--policy", "ai"],
            "--policy: unknown policy 'ai'",
        ),
        (
            ["simulate", "-f", "preset:paper", "--trace", "synthetic", "--start-pool", "-1"],
            "--start-pool: expected 0..1000 instances (scaling.maxInstances), got -1",
        ),
        (
            ["plan", "-f", "{misspelt}"],
            "{misspelt}: spec.slo.latencySecond: unknown field (misspelt? the schema has no such field)",
        ),
        (["plan", "-f", "/dev/zero"], "/dev/zero: document larger than 4 MiB"),
        (
            ["simulate", "-f", "preset:paper", "--trace", "/dev/zero"],
            "/dev/zero: trace larger than 64 MiB",
        ),
        (["plan", "-f", "{aliases}"], "{aliases}: more than 100,000 values (YAML aliases?)"),
        (["plan", "-f", "{deep}"], "{deep}: nested deeper than 64 levels"),
        (
            ["plan", "-f", "preset:paper", "--plot", "{tmp}/x.xyz"],
            "--plot: expected a file ending in .png, .svg, .pdf, got '{tmp}/x.xyz'",
        ),
        (["synth", "--base", "inf"], "--base: expected a finite number >= 0, got inf"),
        (
            ["simulate", "-f", "{hugek}", "--trace", "synthetic", "--epochs", "30"],
            "a number in the input is too large to compute with",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "m").mkdir()
    subs = {
        "bad": str(_bad_profile(tmp_path)),
        "badsfi": str(_manifest(tmp_path, latencySeconds="x")),
        "tmp": str(tmp_path),
        "garbage": str(tmp_path / "g.yaml"),
        "trace": str(tmp_path / "t.txt"),
        "empty": str(tmp_path / "e.txt"),
        "aliases": str(tmp_path / "a.yaml"),
        "deep": str(tmp_path / "d.yaml"),
        "hugek": str(tmp_path / "k.yaml"),
        "misspelt": str(_manifest(tmp_path / "m", latencySecond=3)),
    }
    doc = tiny_doc()
    doc["scaling"]["k"] = 1e308
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(doc))
    # Nine levels of nine aliases: a billion values from a few hundred bytes.
    levels = ["l0: &l0 [1]"] + [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    (tmp_path / "a.yaml").write_text("\n".join([*levels, "kind: SerflowInference", "spec: *l9"]) + "\n")
    (tmp_path / "d.yaml").write_text("[" * 1000 + "]" * 1000 + "\n")
    (tmp_path / "g.yaml").write_text("a: [1,\n")
    (tmp_path / "t.txt").write_text("1\n2\nx\n")
    (tmp_path / "e.txt").write_text("")
    r = serflow(*(a.format(**subs) for a in args))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith("serflow: error: " + message.format(**subs))


def test_kubernetes_envelope_fields_are_not_checked(tmp_path: Path) -> None:
    # What `kubectl get -o yaml` adds (metadata's other fields, status) is the API
    # server's: the CLI plans from such a copy.
    f = _manifest(tmp_path)
    doc = yaml.safe_load(f.read_text())
    doc["metadata"] |= {"namespace": "a", "labels": {"x": "y"}, "resourceVersion": "7"}
    doc["status"] = {"conditions": []}
    f.write_text(yaml.safe_dump(doc))
    r = serflow("plan", "-f", str(f))
    assert r.returncode == 0, r.stderr


def test_synth_writes_a_trace(tmp_path: Path) -> None:
    out = tmp_path / "s.txt"
    r = serflow("synth", "--epochs", "50", "--seed", "1", "-o", str(out))
    assert r.returncode == 0
    assert len(out.read_text().split()) == 50


def test_control_plane_imports_no_torch() -> None:
    code = (
        "import sys, serflow.policy, serflow.sim, serflow.cli, serflow.profile, serflow.report;"
        "print('torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_simulate_phases_gives_each_ticked_policy_its_cost_range(tmp_path: Path) -> None:
    doc, trace = tmp_path / "tiny.yaml", tmp_path / "trace.txt"
    doc.write_text(yaml.safe_dump(tiny_doc(scaling__intervalEpochs=3)))
    # a dip that one phase's tick sees and the others' do not (tests/sim: the phase table)
    trace.write_text("\n".join(map(str, [25, 25, 5, 5, 5, 5, 45, 45, 45, 45])) + "\n")
    base = ("simulate", "-f", str(doc), "--trace", str(trace), "--tau", "0.5", "--phases")
    r = serflow(*base, "--json")
    assert r.returncode == 0, r.stderr
    res = {x["policy"]: x for x in json.loads(r.stdout)["results"]}
    assert res["faas"]["phaseRange"] is None and res["bound"]["phaseRange"] is None
    libra = res["libra"]["phaseRange"]
    assert libra["phases"] == 3
    assert libra["cheapest"] <= res["libra"]["totalCost"] <= libra["dearest"]
    assert libra["cheapest"] < libra["dearest"]
    text = serflow(*base)
    assert text.returncode == 0, text.stderr
    assert "total cost over the 3 scaling-tick phases" in text.stdout
    assert f"tau 0.5 libra: {libra['cheapest']:.4f} to {libra['dearest']:.4f} $" in text.stdout


def test_an_unprofiled_tau_names_what_the_profile_has() -> None:
    r = serflow("simulate", "-f", "preset:paper", "--trace", "synthetic", "--epochs", "20", "--tau", "0.6")
    assert r.returncode == 2
    assert r.stderr.strip() == "serflow: error: --tau: 0.6 is not profiled (the profile has: 0.5, 0.7, 0.85)"


def test_cost_changes_are_negative_when_cheaper() -> None:
    r = serflow("simulate", "-f", "preset:paper", "--trace", "synthetic", "--epochs", "400", "--tau", "0.5", "--json")
    assert r.returncode == 0, r.stderr
    res = {x["policy"]: x for x in json.loads(r.stdout)["results"]}
    libra, faas = res["libra"]["totalCost"], res["faas"]["totalCost"]
    assert faas < libra  # at tau 0.5 functions are cheaper than whole-model VMs (README)
    assert res["faas"]["costVsLibra"] == pytest.approx(faas / libra - 1) and res["faas"]["costVsLibra"] < 0
    assert res["libra"]["costVsFaas"] > 0 and res["libra"]["costVsLibra"] == 0
    table = serflow("simulate", "-f", "preset:paper", "--trace", "synthetic", "--epochs", "400", "--tau", "0.5")
    assert "(negative: cheaper)" in table.stdout
    row = next(line for line in table.stdout.splitlines() if line.split()[1:2] == ["faas"])
    assert f"{100 * (faas / libra - 1):+.1f}%" in row


def test_plan_ranks_by_a_replay_of_the_trace(tmp_path: Path) -> None:
    doc, trace = tmp_path / "tiny.yaml", tmp_path / "bursty.txt"
    doc.write_text(yaml.safe_dump(tiny_doc()))
    trace.write_text("\n".join(map(str, ([250] + [0] * 9) * 6)) + "\n")
    r = serflow("plan", "-f", str(doc), "--trace", str(trace), "--scaler", "serflow", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["chosen"]["pool"] != "faas"  # the steady ranking at traffic.expectedRate
    assert out["ranking"]["by"] == "replay" and out["ranking"]["chosen"]["pool"] == "faas"
    text = serflow("plan", "-f", str(doc), "--trace", str(trace))
    assert "Ranked by: replay. Chosen: tau 0.5" in text.stdout and "faas[fn]" in text.stdout
    bad = serflow("plan", "-f", str(doc), "--trace", str(tmp_path / "missing.txt"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_replay_can_start_with_the_pool_the_operator_planned() -> None:
    base = ("simulate", "-f", "preset:paper", "--trace", "synthetic", "--epochs", "60", "--tau", "0.85")
    cold = json.loads(serflow(*base, "--json").stdout)
    warm = serflow(*base, "--start-pool", "2", "--json")
    assert warm.returncode == 0, warm.stderr
    out = json.loads(warm.stdout)
    assert cold["startPool"] == 0 and out["startPool"] == 2
    by = {r["policy"]: r for r in out["results"]}
    was = {r["policy"]: r for r in cold["results"]}
    # The paper's cold start is 22 epochs: from a cold start nothing reaches the pool
    # before epoch 23; with the pool up, the pool serves from the first epoch.
    for p in ("libra", "serflow", "expected-cost", "limit"):
        assert by[p]["poolRequests"] > was[p]["poolRequests"], p
    for p in ("faas", "bound"):  # no pool to start with
        assert by[p]["totalCost"] == was[p]["totalCost"], p
    text = serflow(*base, "--start-pool", "2")
    assert ", 2 instance(s) ready at the start" in text.stdout.splitlines()[0]
