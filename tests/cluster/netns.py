"""Network namespaces for cluster tests: each worker node in its own namespace behind a veth pair,
all pairs on one bridge in the root namespace that holds the API runtime's address, on a private /24.

A partition is a real cut: the node's host-side veth is set down, so its packets go nowhere (its
TCP connections stall and retransmit, as across a failed switch) until the link is set up again.
Nothing leaves the /24: the bridge has no route out and no forwarding is enabled.

A node enters its namespace's network only (`nsenter --net`), not `ip netns exec`: that one also
makes a mount namespace with a fresh /sys of the network namespace's own, without /sys/fs/cgroup,
so the node could not put its task processes in cgroups (machine limits would not be enforced).
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Namespace:
    name: str
    host_link: str  # the veth end on the bridge: down is a partition
    address: str

    def command(self, args: list[str]) -> list[str]:
        """`args` run inside this namespace's network, with the host's mounts (its cgroup hierarchies)."""
        return ["nsenter", f"--net=/run/netns/{self.name}", *args]

    def partition(self) -> None:
        _ip("link", "set", self.host_link, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_link, "up")


@dataclass
class Network:
    """A bridge on 10.<a>.<b>.0/24 (picked at random, so parallel test sessions do not meet)."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: str = field(default_factory=lambda: f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}")
    namespaces: list[Namespace] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"olbr{self.tag}"

    @property
    def host_address(self) -> str:
        """Where the namespaces reach the root namespace (the API runtime listens here)."""
        return f"{self.subnet}.1"

    def create(self) -> Network:
        _ip("link", "add", "name", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add_namespace(self) -> Namespace:
        index = len(self.namespaces) + 1
        name, host_link, inner = f"ol-{self.tag}-n{index}", f"olh{self.tag}n{index}", f"oln{self.tag}n{index}"
        namespace = Namespace(name=name, host_link=host_link, address=f"{self.subnet}.{index + 1}")
        self.namespaces.append(namespace)  # before it exists: cleanup removes whatever part was made
        _ip("netns", "add", name)
        _ip("link", "add", host_link, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", name)
        _ip("link", "set", host_link, "master", self.bridge)
        _ip("link", "set", host_link, "up")
        _ip("-n", name, "addr", "add", f"{namespace.address}/24", "dev", inner)
        _ip("-n", name, "link", "set", inner, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        return namespace

    def remove_namespaces(self) -> None:
        for namespace in self.namespaces:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", namespace.name)  # takes the namespace's veth end, and so its pair
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", namespace.host_link)
        self.namespaces.clear()

    def destroy(self) -> None:
        self.remove_namespaces()
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.bridge)


@contextlib.contextmanager
def network() -> Iterator[Network]:
    made = Network()
    try:
        yield made.create()
    finally:
        made.destroy()
