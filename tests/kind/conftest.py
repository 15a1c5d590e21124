"""The kind cluster, shared by every module under tests/kind: one ``hack/kind.sh`` cluster
(nodes, Knative Serving, serflow's images) per pytest session, so CI brings one up, not
one per module; each module installs the operator from the chart (``helm upgrade
--install``: a few seconds when it is there). Down after the session's last test
(``SERFLOW_KIND_KEEP=1`` leaves it up to look at).

Skipped only where no Docker engine can run or the binaries cannot be built, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serflow_testbed.kind import KindSession, KindUnavailable


@pytest.fixture(scope="session")
def session() -> Iterator[KindSession]:
    """The kind cluster's session: up once for the pytest session, down after its last test."""
    s = KindSession()
    try:
        s.up(lambda msg: print(f"kind: {msg}", flush=True))
        yield s
    except KindUnavailable as e:
        pytest.skip(f"the kind path cannot run here: {e}")
    finally:
        s.down()
