"""Test hosts as Linux network namespaces on one bridge, so processes talk over real interfaces.

Topology: one bridge in the root namespace holds the gateway address (services started in the
root namespace, such as PostgreSQL and SeaweedFS, listen there); each host is a namespace with one
veth pair whose outer end is a bridge port. Cutting a host's link = setting its outer end down.

Every name carries the owning process id, so parallel runs do not collide, and `remove()` deletes
everything (namespaces take their veth pairs with them); `remove_stale()` deletes what a crashed
run left behind (names whose pid no longer runs).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from dataclasses import dataclass, field

PREFIX = "sct"  # scaleout test
NAME = re.compile(rf"^{PREFIX}(\d+)[hbv]")


class NetnsUnavailable(RuntimeError):
    """The kernel or the permissions refuse network namespaces; the message says why."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def netns_available() -> str | None:
    """None when namespaces, veth pairs and bridges can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    probe = f"{PREFIX}{os.getpid()}hprobe"
    try:
        made = ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"ip netns add refused: {made.stderr.strip() or made.returncode}"
        veth = ip("link", "add", f"{PREFIX}{os.getpid()}vp", "type", "veth", "peer", "name",
                  f"{PREFIX}{os.getpid()}vq", check=False)
        if veth.returncode != 0:
            return f"veth pairs refused: {veth.stderr.strip()}"
        bridge = ip("link", "add", f"{PREFIX}{os.getpid()}bp", "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"bridges refused: {bridge.stderr.strip()}"
        return None
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    finally:
        ip("link", "del", f"{PREFIX}{os.getpid()}vp", check=False)
        ip("link", "del", f"{PREFIX}{os.getpid()}bp", check=False)
        ip("netns", "del", probe, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete namespaces and links of earlier runs whose process is gone; returns their names."""
    removed = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = NAME.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            ip("netns", "del", name, check=False)
            removed.append(name)
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        match = NAME.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no route of this machine overlaps, chosen from our pid."""
    used = []
    for line in ip("-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        token = line.split()[0] if line.strip() else ""
        if token in ("default", "broadcast", "local", "unreachable", "blackhole"):
            token = line.split()[1] if len(line.split()) > 1 else ""
        try:
            used.append(ipaddress.ip_network(token, strict=False))
        except ValueError:
            continue
    start = os.getpid() % 60000
    for i in range(60000):
        n = (start + i) % 60000
        candidate = ipaddress.ip_network(f"10.{100 + n // 256 % 150}.{n % 256}.0/24")
        if not any(candidate.overlaps(u) for u in used if u.prefixlen > 0):
            return candidate
    raise NetnsUnavailable("no free /24 in 10.0.0.0/8 for the test network")


@dataclass
class Host:
    name: str  # namespace name
    address: str
    outer: str  # the veth end on the bridge

    def cmd(self, *args: str) -> list[str]:
        """`args` run inside this host's namespace (same pid: ip netns exec execs the command)."""
        return ["ip", "netns", "exec", self.name, *args]

    def cut(self) -> None:
        """Pull the cable: nothing reaches the host or leaves it until `restore`."""
        ip("link", "set", self.outer, "down")

    def restore(self) -> None:
        ip("link", "set", self.outer, "up")


@dataclass
class HostNetwork:
    subnet: ipaddress.IPv4Network = field(default_factory=free_subnet)
    hosts: dict[str, Host] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    _bridge: str | None = None

    @property
    def gateway(self) -> str:
        """The bridge's address in the root namespace: where shared services listen."""
        return str(self.subnet.network_address + 1)

    def create_bridge(self) -> None:
        bridge = f"{self.tag}b"
        ip("link", "add", bridge, "type", "bridge")
        self._bridge = bridge
        ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", bridge)
        ip("link", "set", bridge, "up")

    def add_host(self, label: str) -> Host:
        """A namespace with loopback up and one address on the bridge (default route via the gateway)."""
        if self._bridge is None:
            self.create_bridge()
        index = len(self.hosts) + 1
        namespace = f"{self.tag}h{label}"
        outer, inner = f"{self.tag}v{index}", f"{self.tag}v{index}i"
        if len(outer) > 15 or len(inner) > 15:
            raise NetnsUnavailable(f"interface name {inner!r} is longer than the kernel's 15 characters")
        address = str(self.subnet.network_address + 10 + index)
        ip("netns", "add", namespace)
        host = Host(namespace, address, outer)
        self.hosts[label] = host
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", namespace)
        ip("link", "set", outer, "master", self._bridge, "up")
        ip("-n", namespace, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", inner)
        ip("-n", namespace, "link", "set", inner, "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", namespace, "route", "add", "default", "via", self.gateway)
        return host

    def remove(self) -> None:
        """Delete every namespace (with its veth pair) and the bridge; safe to call twice."""
        for host in self.hosts.values():
            ip("netns", "del", host.name, check=False)
            ip("link", "del", host.outer, check=False)
        self.hosts.clear()
        if self._bridge is not None:
            ip("link", "del", self._bridge, check=False)
            self._bridge = None
