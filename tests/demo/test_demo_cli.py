"""The demo command's own behaviour, without a cluster."""

from __future__ import annotations

import fcntl
import signal
from pathlib import Path

import pytest

from serflow_runtime.local import demo


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
