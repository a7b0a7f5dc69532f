"""Hosts on one machine: network namespaces on a bridge, each with its own 10.251.0.0/24 address.

The bridge lives in a namespace of its own too, so nothing of the machine's own network (its
namespace, routes, addresses) is touched; everything made here goes with `ip netns del`.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
SUBNET = "10.251.0"


def ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def netns_usable() -> str | None:
    """None when namespaces can be made here, else why not."""
    name = f"parse-probe-{secrets.token_hex(3)}"
    try:
        done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    except FileNotFoundError:
        return "the ip command (iproute2) is not installed"
    if done.returncode != 0:
        return f"`ip netns add` is not permitted here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], check=True)
    return None


def enter(ns: str) -> None:
    """Move the calling thread into namespace `ns`; sockets it opens from now on live there."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}")
    finally:
        os.close(fd)


def pool(ns: str, workers: int) -> ThreadPoolExecutor:
    """Threads that each live in namespace `ns` (network namespaces are per thread)."""
    return ThreadPoolExecutor(workers, initializer=enter, initargs=(ns,))


@dataclass
class Net:
    """Namespaces `hosts` (name -> last address byte) on one bridge."""

    hosts: dict[str, int]
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    made: list[str] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"parse-{self.tag}-{host}"

    def address(self, host: str) -> str:
        return f"{SUBNET}.{self.hosts[host]}"

    def up(self) -> "Net":
        switch = self.ns("switch")
        ip("netns", "add", switch)
        self.made.append(switch)
        ip("link", "add", "br0", "type", "bridge", ns=switch)
        ip("link", "set", "br0", "up", ns=switch)
        for n, host in enumerate(self.hosts):
            name = self.ns(host)
            ip("netns", "add", name)
            self.made.append(name)
            # Made in the root namespace for an instant, then each end moved away at once.
            a, b = f"pv{self.tag}{n}h", f"pv{self.tag}{n}s"
            ip("link", "add", a, "type", "veth", "peer", "name", b)
            ip("link", "set", a, "netns", name)
            ip("link", "set", b, "netns", switch)
            ip("link", "set", a, "name", "eth0", ns=name)
            ip("addr", "add", f"{self.address(host)}/24", "dev", "eth0", ns=name)
            ip("link", "set", "eth0", "up", ns=name)
            ip("link", "set", "lo", "up", ns=name)
            ip("link", "set", b, "master", "br0", ns=switch)
            ip("link", "set", b, "up", ns=switch)
        return self

    def link(self, host: str, state: str) -> None:
        """Pull (down) or plug back (up) a host's cable."""
        ip("link", "set", "eth0", state, ns=self.ns(host))

    def sysctl(self, host: str, values: dict[str, int]) -> None:
        subprocess.run(["ip", "netns", "exec", self.ns(host), "sysctl", "-q", "-w",
                        *(f"{k}={v}" for k, v in values.items())], check=True)

    def down(self) -> None:
        """Delete every namespace made (their veths and the bridge go with them)."""
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.made.clear()
