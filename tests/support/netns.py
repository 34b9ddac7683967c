"""Private network namespaces, so that no test ever multicasts on the machine's network.

The whole test session re-executes itself under ``unshare --net`` (with a user namespace
when not root), in a namespace whose only interface is ``lo``, up and multicast-capable.
Tests that need more "hosts" create further namespaces from there (`Namespace`) and join
them with a veth pair (`veth`). Benchmarks use the same helpers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["ENV_FLAG", "Namespace", "in_private_netns", "reexec_in_private_netns", "veth"]

#: Set in the re-executed process, so that it does not re-execute again.
ENV_FLAG = "VOCALINK_PRIVATE_NETNS"


def _ip() -> str:
    found = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.path.exists(p)), None)
    if found is None:
        raise RuntimeError("the 'ip' command (Debian package iproute2) is needed for the "
                           "private network namespace of the tests")
    return found


def _unshare_net() -> list[str]:
    """``unshare --net``, with a user namespace when not root (then no privilege is needed)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError("the 'unshare' command (Debian package util-linux) is needed")
    return [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--map-root-user", "--net"]


def interface_names() -> list[str]:
    """Interfaces of the current network namespace (asked of the kernel, not of /sys)."""
    return sorted(name for _, name in socket.if_nameindex())


def in_private_netns() -> bool:
    """True in the re-executed process, whose namespace has ``lo`` and nothing else."""
    return os.environ.get(ENV_FLAG) == "1" and interface_names() == ["lo"]


def reexec_in_private_netns(argv: Sequence[str] | None = None) -> None:
    """Replace this process by the same command inside a new network namespace.

    Never returns. Raises `RuntimeError` (before replacing anything) when namespaces
    cannot be made here, with the reason.
    """
    ip = _ip()
    setup = f'{ip} link set lo up && {ip} link set lo multicast on && exec "$@"'
    command = [*_unshare_net(), "--", "/bin/sh", "-c", setup, "vocalink-netns"]
    probe = subprocess.run([*command, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        raise RuntimeError(f"cannot create a private network namespace: {probe.stderr.strip()}")
    args = list(argv) if argv is not None else [sys.executable, *sys.orig_argv[1:]]
    os.environ[ENV_FLAG] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], [*command, *args])


class Namespace:
    """A further network namespace (a test "host"), kept alive by a sleeping process.

    Parameters
    ----------
    multicast : bool
        Whether its ``lo`` gets multicast on (off: a host where mDNS cannot work).
    """

    def __init__(self, *, multicast: bool = True) -> None:
        self._holder = subprocess.Popen([*_unshare_net(), "--", "sleep", "3600"],
                                        stdin=subprocess.DEVNULL)
        self.pid = self._holder.pid
        deadline = time.monotonic() + 10
        # unshare replaces itself by sleep once the namespace exists.
        while os.readlink(f"/proc/{self.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            if time.monotonic() > deadline or self._holder.poll() is not None:
                self.close()
                raise RuntimeError("the namespace holder did not start")
            time.sleep(0.01)
        self.ip("link", "set", "lo", "up")
        if multicast:
            self.ip("link", "set", "lo", "multicast", "on")

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this namespace."""
        return ["nsenter", "-t", str(self.pid), "-n", "--", *argv]

    def ip(self, *args: str) -> None:
        """Run ``ip ARGS`` inside this namespace."""
        subprocess.run(self.command([_ip(), *args]), check=True, capture_output=True,
                       timeout=30)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``argv`` inside this namespace (text mode, pipes as given)."""
        return subprocess.Popen(self.command(argv), text=True, **kwargs)

    def close(self) -> None:
        """End the namespace (its holder); idempotent."""
        if self._holder.poll() is None:
            self._holder.kill()
        self._holder.wait(10)

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def veth(a: Namespace, a_name: str, a_cidr: str, b: Namespace, b_name: str, b_cidr: str) -> None:
    """Join ``a`` and ``b`` with a veth pair, address both ends and bring them up."""
    subprocess.run([_ip(), "link", "add", a_name, "netns", str(a.pid), "type", "veth",
                    "peer", "name", b_name, "netns", str(b.pid)],
                   check=True, capture_output=True, timeout=30)
    for ns, name, cidr in ((a, a_name, a_cidr), (b, b_name, b_cidr)):
        ns.ip("addr", "add", cidr, "dev", name)
        ns.ip("link", "set", name, "up")
