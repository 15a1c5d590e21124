"""The connection guard of every Python process the tests and the demos start.

Tests, demos and benchmarks may reach only this machine's loopback range and the project's
own kind network (DESIGN, section 5: nothing leaves the machine). The guard is an audit
hook (PEP 578) on ``socket.connect`` and ``socket.sendto``: a connection to any other
address is refused before a packet is sent (``PermissionError``), and a line naming the
process and the address is appended to the guard's log, which the test session reads and
fails on (a process that swallows the error is caught all the same).

``activate`` turns it on in the calling process and, through the environment, in every
Python process started from it: ``PYTHONPATH`` gains the directory of the guard's
``sitecustomize``, which installs it at interpreter start. Build steps that need the
package registries (pip, go, apt, docker build) run outside it, before the tests.

Standard library only: ``sitecustomize`` imports it into every guarded interpreter.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path

LOG_ENV = "SERFLOW_NETGUARD_LOG"
"""Path of the guard's log; the guard is active in a process that has it set."""
ALLOW_ENV = "SERFLOW_NETGUARD_ALLOW"
"""Comma-separated networks allowed besides loopback (the kind network's subnet)."""
SITE_DIR = Path(__file__).resolve().parent / "netguard_site"
"""The directory holding the guard's ``sitecustomize.py``, put first on ``PYTHONPATH``."""
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
"""Always allowed."""
LOCAL_ANY = (ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::"))
"""A connection to the unspecified address reaches this host (Linux)."""
EVENTS = frozenset({"socket.connect", "socket.sendto"})
"""The audit events that carry a destination address."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetworkGuardError(PermissionError):
    """A connection outside loopback and the kind network, refused before it was made."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"172.18.0.0/16,fc00::/64"`` as networks; an empty text is none."""
    return tuple(ipaddress.ip_network(n.strip(), strict=False) for n in text.split(",") if n.strip())


def allowed(host: str, networks: Iterable[Network]) -> bool:
    """Whether an IP address (not a name) is loopback, unspecified or in ``networks``."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in LOCAL_ANY:
        return True
    return any(ip in n for n in (*LOOPBACK, *networks))


def destinations(address: object) -> list[str]:
    """The IP addresses a socket address names: an IP itself, or what a name resolves to.
    Unix, netlink and other non-IP addresses name none."""
    if not isinstance(address, tuple) or len(address) < 2 or not isinstance(address[0], str):
        return []
    host = address[0]
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return [host]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return []  # the connect itself will fail to resolve it: nothing is sent
    return sorted({str(info[4][0]) for info in infos})


def process_name() -> str:
    """The process as a person finds it: its PID and command line."""
    return f"pid {os.getpid()} ({' '.join(sys.orig_argv)[:200]})"


class Guard:
    """The audit hook: refuses, and records, a connection outside the allowed networks."""

    def __init__(self, log: Path) -> None:
        self.log = log
        """Where refusals are recorded, one line each."""
        self._allow_text: str | None = None
        self._networks: tuple[Network, ...] = ()

    def networks(self) -> tuple[Network, ...]:
        """Read from the environment each time: the kind network is allowed once it exists."""
        text = os.environ.get(ALLOW_ENV, "")
        if text != self._allow_text:
            self._networks, self._allow_text = parse_networks(text), text
        return self._networks

    def __call__(self, event: str, args: tuple[object, ...]) -> None:
        if event not in EVENTS:
            return
        address = args[-1]
        for host in destinations(address):
            if not allowed(host, self.networks()):
                self.refuse(address)

    def refuse(self, address: object) -> None:
        line = f"{process_name()} tried to reach {address!r}"
        try:
            with self.log.open("a", encoding="utf-8") as f:
                f.write(line.replace("\n", " ") + "\n")
        except OSError:
            pass  # the exception below still stops the connection
        raise NetworkGuardError(
            f"serflow netguard: {line}: only loopback and the kind network are allowed"
        )


_installed: Guard | None = None


def install(log: Path) -> None:
    """Turn the guard on in this process (once; an audit hook cannot be removed)."""
    global _installed
    if _installed is None:
        _installed = Guard(log)
        sys.addaudithook(_installed)


def install_from_env() -> None:
    """What ``sitecustomize`` runs at interpreter start: on when the log is set."""
    log = os.environ.get(LOG_ENV)
    if log:
        install(Path(log))


def activate(log: Path) -> None:
    """Guard this process and every Python process started from it from now on."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    os.environ[LOG_ENV] = str(log)
    path = os.environ.get("PYTHONPATH", "")
    if str(SITE_DIR) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE_DIR), path) if p)
    install(log)


def allow(network: str) -> None:
    """Allow a network (the kind network's subnet) here and in processes started later."""
    parse_networks(network)  # a bad value fails here, not in every later connection
    nets = [n for n in os.environ.get(ALLOW_ENV, "").split(",") if n]
    if network not in nets:
        os.environ[ALLOW_ENV] = ",".join([*nets, network])


def refusals(log: Path, start: int = 0) -> tuple[list[str], int]:
    """The refusals recorded from byte ``start`` on, and the offset to read from next."""
    try:
        with log.open("rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return [], start
    return [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()], start + len(data)
