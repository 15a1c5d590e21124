"""The uninstall hook's decisions (``serflow.controller.release``): which finalizer comes off
an object and how; its run on a cluster is the kind test's (tests/kind/test_uninstall_kind.py)."""

from __future__ import annotations

import pytest

from serflow.controller import release
from serflow.k8s.crd import FINALIZER


def test_only_the_operators_finalizer_comes_off_guarded_by_the_resource_version() -> None:
    meta = {"finalizers": ["example.com/keep", FINALIZER], "resourceVersion": "42"}
    assert release.finalizer_patch(meta) == {
        "metadata": {"finalizers": ["example.com/keep"], "resourceVersion": "42"}
    }


@pytest.mark.parametrize("held", [None, [], ["example.com/keep"]])
def test_an_object_without_it_is_left_alone(held: list[str] | None) -> None:
    assert release.finalizer_patch({"finalizers": held, "resourceVersion": "1"}) is None


def test_the_finalizer_is_kopfs_default_so_older_objects_are_released_too() -> None:
    import kopf

    assert kopf.OperatorSettings().persistence.finalizer == FINALIZER


def test_bad_arguments_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        release.main(["--deployment", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "required" in err[-1] and "Traceback" not in "".join(err)


def test_a_failure_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(r: release.Release) -> str:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(release, "run", refused)
    args = ["--deployment", "op", "--release-namespace", "sys", "--selector", "a=b"]
    assert release.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
