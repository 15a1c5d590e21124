"""End to end on the local control plane: a short replay through the operator, the local
runtime (workers, function activators, a real Envoy) and real held-out images.

Asserts service, not speed: no failed request, right answers, the pool scaled, and the
functions served the spill and scaled out.  No timing thresholds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from serflow_testbed import demo
from tests.controller.manifests import REPO

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("example", ["digits-demo", "digits-resnet"])
def test_short_replay_serves_everything(cluster: Any, tmp_path: Path, example: str) -> None:
    """Both shipped architectures (the VGG and the residual network), served by the
    operator from their pinned artefacts."""
    trace = tmp_path / "ramp.txt"
    # A quiet start, then a rise the starting pool cannot absorb: it must grow and spill.
    trace.write_text("".join(f"{n}\n" for n in [40] * 3 + [220] * 12))
    out = tmp_path / "out"
    rc = demo.main(["-f", str(REPO / "examples" / f"{example}.yaml"), "--trace", str(trace),
                    "--epochs", "15", "--scale", "1", "--cold-start", "4",
                    "--calibration-epochs", "4", "--out", str(out), "--keep-cluster"])  # fmt: skip
    r = json.loads((out / "results.json").read_text())
    s = r["summary"]
    assert s["requests"] == 3 * 40 + 12 * 220
    assert s["failures"] == 0, r["failuresByStatus"]
    assert rc == 0
    # Right answers: the held-out accuracy at tau, within a point of the profile.
    assert s["accuracy"] >= r["profiledAccuracy"] - 0.01
    assert sum(s["exits"].values()) == s["requests"]
    k = len(yaml.safe_load((REPO / "examples" / f"{example}.yaml").read_text())["spec"]["model"]["exits"]) + 1
    assert {int(e) for e in s["exits"]} <= set(range(1, k + 1)), s["exits"]  # this model's exits
    desired = [row["desired"] or 0 for row in r["timeline"]]
    ready = [row["ready"] or 0 for row in r["timeline"]]
    assert max(desired) > min(desired), desired  # the operator resized the pool
    assert max(ready) >= 2, ready  # and the local runtime ran it
    assert s["pool"] > 0 and s["function"] > 0  # the pool served, the functions took spill
    # The spill activator scaled the function out (Knative's initial scale is one pod).
    assert r["functionPeak"] >= 2, r["functionColdStarts"]
    assert r["calibrationEpochs"] == 4 and r["functionAlone"]["own_s"] > 0
    assert (out / "timeline.png").stat().st_size > 0
