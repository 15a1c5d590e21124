"""The connection guard that every process of the tests and the demos carries.

A refused connection never sends a packet: the audit hook raises before the system call.
So that a broken guard could not send one either, the child that dials a private-range
address binds its socket to the loopback device first (SO_BINDTODEVICE, which needs
root or CAP_NET_RAW): its packets could only ever go out on ``lo``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serflow_testbed import netguard
from serflow_testbed.kind import Drop, Drops, host_resolvers

DIAL = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
s.settimeout(2)
s.connect((sys.argv[1], int(sys.argv[2])))
print("connected")
"""


def _child(code: str, log: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter started as the tests start theirs: the environment inherited
    (the guard arrives through PYTHONPATH), its own guard log."""
    env = {**os.environ, netguard.LOG_ENV: str(log)}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def _can_bind_to_lo() -> bool:
    with socket.socket() as s:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
        except PermissionError:
            return False
    return True


def test_a_process_that_dials_a_private_address_is_stopped_and_named(tmp_path: Path) -> None:
    if not _can_bind_to_lo():
        pytest.skip("SO_BINDTODEVICE needs root or CAP_NET_RAW: the child could not be "
                    "kept on the loopback device should the guard fail")  # fmt: skip
    log = tmp_path / "refusals.log"
    r = _child(DIAL, log, "10.96.0.1", "443")
    assert r.returncode != 0 and "connected" not in r.stdout, r
    assert "NetworkGuardError" in r.stderr and "10.96.0.1" in r.stderr, r.stderr
    lines, _ = netguard.refusals(log)
    assert len(lines) == 1, lines
    assert "10.96.0.1" in lines[0] and "443" in lines[0]
    assert "pid " in lines[0] and "-c" in lines[0], lines[0]  # the process, by PID and argv


def test_loopback_and_allowed_networks_pass(tmp_path: Path) -> None:
    log = tmp_path / "refusals.log"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        r = _child(DIAL.replace('b"lo"', 'b""'), log, "127.0.0.1", str(port))
    assert r.returncode == 0 and "connected" in r.stdout, r.stderr
    assert netguard.refusals(log)[0] == []


@pytest.mark.parametrize(
    ("host", "networks", "ok"),
    [
        ("127.0.0.1", "", True),
        ("127.8.9.10", "", True),
        ("::1", "", True),
        ("::ffff:127.0.0.1", "", True),
        ("0.0.0.0", "", True),
        ("10.96.0.1", "", False),
        ("10.244.3.5", "", False),
        ("192.168.1.1", "", False),
        ("8.8.8.8", "", False),
        ("fe80::1%eth0", "", False),
        ("172.18.0.2", "172.18.0.0/16", True),
        ("172.19.0.2", "172.18.0.0/16", False),
        ("::ffff:172.18.0.3", "172.18.0.0/16", True),
    ],
)
def test_allowed(host: str, networks: str, ok: bool) -> None:
    assert netguard.allowed(host, netguard.parse_networks(networks)) is ok


def test_destinations_of_names_and_other_families() -> None:
    assert netguard.destinations(("10.0.0.1", 80)) == ["10.0.0.1"]
    assert "127.0.0.1" in netguard.destinations(("localhost", 80))
    assert netguard.destinations("/run/docker.sock") == []
    assert netguard.destinations((0, 0)) == []  # netlink


def test_allow_rejects_a_bad_network_at_once() -> None:
    with pytest.raises(ValueError):
        netguard.allow("172.18.0.0/33")


def test_host_resolvers_are_read_from_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# x\nsearch example\nnameserver 10.255.255.53\nnameserver ::1\noptions a\n")
    assert host_resolvers(conf) == ("10.255.255.53", "::1")
    assert host_resolvers(tmp_path / "none") == ()


def test_kind_drops_are_told_apart_by_the_cluster_ranges() -> None:
    text = ("10.96.0.1 tcp 443 63\n10.244.3.5 tcp 8080 18\n192.168.7.7 udp 53 2\n"
            "10.255.255.53 udp 53 7\n10.255.255.53 tcp 80 1\ntotal - - 91\n")  # fmt: skip
    d = Drops.parse(text, ("10.244.0.0/16", "10.96.0.0/16"), ("10.255.255.53",))
    assert d.total == 91 and len(d.by_destination) == 5
    assert d.dns() == [Drop("10.255.255.53", "udp", 53, 7)]
    assert d.outside() == [Drop("192.168.7.7", "udp", 53, 2), Drop("10.255.255.53", "tcp", 80, 1)]
    assert "91 packets: 81 toward the cluster's own ranges" in d.summary()
    assert "7 DNS toward this machine's resolver, 2 destinations elsewhere" in d.summary()
    assert Drops.parse("total - - 0\n", ()).summary() == "the kind network's drop rule stopped nothing"
