"""Network namespaces and tagged iptables rules, for kernel-level partitions.

Each namespace faultdrill makes is named ``fd-<suffix>`` and joined to the host by a veth
pair addressed from 169.254.213.0/24 in /30 blocks: those addresses exist only on that
pair, so nothing is ever routed anywhere else. Choosing a free block and claiming it happen
under one host-wide lock (``flock`` on ``/run/lock/faultdrill-netns.lock``): two runs on one host
(a game day beside a CI job, or parallel test workers) never get the same addresses. Every rule
carries the comment
``faultdrill:<injection-id>``, so a rollback removes exactly its own rules and nobody else's.

Example::

    ns = create_namespace("t1")                 # fd-t1, host 169.254.213.1, ns .2
    add_rules(ns.name, [PartitionRule("drop", "both", port=8000)], "3f2a9c")
    ...                                         # clients of 169.254.213.2:8000 time out
    remove_rules(ns.name, "3f2a9c")
    delete_namespace(ns.name)
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from faultdrill.faults.errors import BlastRadiusError, FaultdrillError
from faultdrill.faults.hostlock import host_lock

__all__ = [
    "PREFIX",
    "Namespace",
    "PartitionRule",
    "add_rules",
    "create_namespace",
    "delete_namespace",
    "list_namespaces",
    "list_rules",
    "netns_exec",
    "remove_rules",
    "rule_argvs",
]

PREFIX = "fd-"
_SUBNET = ipaddress.IPv4Network("169.254.213.0/24")
_SUFFIX = re.compile(r"^[a-z0-9]{1,11}$")  # interface names must fit in 15 bytes
_TAG = "faultdrill:"


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise FaultdrillError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns_exec(namespace: str, argv: list[str]) -> list[str]:
    """``argv`` run inside ``namespace`` (for ``subprocess``)."""
    return ["ip", "netns", "exec", namespace, *argv]


@dataclass(frozen=True)
class Namespace:
    """A faultdrill namespace and its veth pair; ``ns_addr`` is reachable from the host."""

    name: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str


def list_namespaces() -> list[str]:
    """faultdrill's namespaces (``fd-*``) only."""
    out = _run(["ip", "netns", "list"]).stdout
    return sorted(n for n in (line.split()[0] for line in out.splitlines() if line) if
                  n.startswith(PREFIX))


def _free_block() -> ipaddress.IPv4Network:
    used = _run(["ip", "-o", "-4", "addr", "show"]).stdout
    for block in _SUBNET.subnets(new_prefix=30):
        if str(block.network_address + 1) + "/" not in used:
            return block
    raise FaultdrillError(f"no free /30 left in {_SUBNET} for another namespace")


def create_namespace(suffix: str) -> Namespace:
    """Create ``fd-<suffix>`` with a veth pair and loopback up; undone on failure."""
    if not _SUFFIX.match(suffix):
        raise ValueError(f"namespace suffix must match {_SUFFIX.pattern}, got {suffix!r}")
    name = PREFIX + suffix
    with host_lock("netns"):  # between reading the used addresses and claiming one, no other process claims one
        block = _free_block()
        host_addr, ns_addr = block.network_address + 1, block.network_address + 2
        ns = Namespace(name, f"fdh-{suffix}", f"fdn-{suffix}", str(host_addr), str(ns_addr))
        try:
            _run(["ip", "netns", "add", name])
            _run(["ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if])
            _run(["ip", "link", "set", ns.ns_if, "netns", name])
            _run(["ip", "addr", "add", f"{host_addr}/30", "dev", ns.host_if])  # claimed: visible to _free_block
        except FaultdrillError:
            delete_namespace(name, host_if=ns.host_if)
            raise
    try:
        _run(["ip", "link", "set", ns.host_if, "up"])
        _run(netns_exec(name, ["ip", "addr", "add", f"{ns_addr}/30", "dev", ns.ns_if]))
        _run(netns_exec(name, ["ip", "link", "set", ns.ns_if, "up"]))
        _run(netns_exec(name, ["ip", "link", "set", "lo", "up"]))
    except FaultdrillError:
        delete_namespace(name, host_if=ns.host_if)
        raise
    return ns


def delete_namespace(name: str, *, host_if: str | None = None) -> None:
    """Delete a faultdrill namespace (its veth pair goes with it); a no-op if absent."""
    if not name.startswith(PREFIX):
        raise BlastRadiusError("network namespace", name, allowed=[f"{PREFIX}*"])
    if Path("/run/netns", name).exists():
        _run(["ip", "netns", "del", name])
    host_if = host_if or "fdh-" + name[len(PREFIX):]
    if Path("/sys/class/net", host_if).exists():  # a half-made pair outlives no namespace
        _run(["ip", "link", "del", host_if], check=False)


@dataclass(frozen=True)
class PartitionRule:
    """Traffic to stop, seen from inside the namespace.

    ``drop``: packets vanish (clients time out); ``reject``: TCP RST (refused / reset).
    ``ingress`` is traffic into the namespace, ``egress`` out of it, ``both`` is both.
    ``probability`` (0–1] drops only that share of packets: packet loss.
    """

    action: Literal["drop", "reject"] = "drop"
    direction: Literal["ingress", "egress", "both"] = "both"
    port: int | None = None
    probability: float | None = None


def rule_argvs(rule: PartitionRule, injection_id: str) -> list[list[str]]:
    """iptables arguments (chain first, no -I/-D) for ``rule``, tagged with the injection."""
    argvs = []
    for chain, port_flag in (("INPUT", "--dport"), ("OUTPUT", "--sport")):
        if rule.direction != "both" and (chain == "INPUT") != (rule.direction == "ingress"):
            continue
        argv = [chain]
        if rule.port is not None or rule.action == "reject":
            argv += ["-p", "tcp"]  # REJECT --reject-with tcp-reset needs -p tcp
        if rule.port is not None:
            argv += [port_flag, str(rule.port)]
        if rule.probability is not None:
            argv += ["-m", "statistic", "--mode", "random", "--probability",
                     f"{rule.probability:.4f}"]
        argv += ["-m", "comment", "--comment", _TAG + injection_id]
        argv += ["-j", "DROP"] if rule.action == "drop" else [
            "-j", "REJECT", "--reject-with", "tcp-reset"]
        argvs.append(argv)
    return argvs


def add_rules(namespace: str, rules: list[PartitionRule], injection_id: str) -> list[list[str]]:
    """Insert the rules at the top of their chains (ahead of any ACCEPT); returns them."""
    added = [argv for rule in rules for argv in rule_argvs(rule, injection_id)]
    for argv in added:
        _run(netns_exec(namespace, ["iptables", "-w", "5", "-I", *argv]))
    return added


def list_rules(namespace: str, injection_id: str | None = None) -> list[str]:
    """``iptables -S`` lines tagged by faultdrill (by one injection, if given)."""
    if not Path("/run/netns", namespace).exists():
        return []
    out = _run(netns_exec(namespace, ["iptables", "-w", "5", "-S"])).stdout
    tag = _TAG + (injection_id or "")
    return [line for line in out.splitlines() if line.startswith("-A ") and tag in line]


def remove_rules(namespace: str, injection_id: str) -> int:
    """Delete exactly the rules tagged with ``injection_id``; returns how many."""
    lines = list_rules(namespace, injection_id)
    for line in lines:
        # "-S" prints rules in "-A CHAIN ..." form; the same words with -D delete it.
        words = line.split()
        words = [w.strip('"') for w in words]
        _run(netns_exec(namespace, ["iptables", "-w", "5", "-D", *words[1:]]))
    return len(lines)
