"""``NetworkPartitionFault``: drop, reject or lose packets inside a faultdrill namespace.

Kernel-level (iptables in the namespace), so existing connections see the partition too,
exactly as they would in a real one. Latency, jitter and bandwidth are the proxy's job
(tc netem is not available on this kernel): see :mod:`faults.network`.

Aim it at a namespace by name, or at a service (``target``) whose handle has a ``netns``
(e.g. the feature store of ``LocalStack(feature_store_netns=True)``); a target's rules cover
its own port unless ``port`` says otherwise, and ``verify`` then also probes that port.

Example::

    fault = NetworkPartitionFault()
    cfg = fault.parse_config({"target": "feature-store", "action": "reject"})
    inj = fault.inject(cfg, ctx)                # ledger first, then the rules
    assert fault.verify(inj, ctx).effective     # rules present, counters read, probe refused
    fault.undo(inj, ctx)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import ConfigError, FaultdrillError
from faultdrill.faults.kube.objects import PartitionAction
from faultdrill.faults.netns import (
    PREFIX,
    PartitionRule,
    add_rules,
    list_rules,
    netns_exec,
    remove_rules,
    rule_argvs,
)

__all__ = ["NetworkPartitionFault"]


class NetworkPartitionFault(Fault):
    """Partition a faultdrill network namespace (``drop``, ``reject`` or ``loss`` mode)."""

    class Config(FaultConfig):
        namespace: str | None = Field(default=None, pattern=rf"^{PREFIX}[a-z0-9]{{1,11}}$")
        target: str | None = None
        """A service in the topology whose handle has a ``netns`` (instead of ``namespace``)."""
        action: Literal["drop", "reject"] = "drop"
        direction: Literal["ingress", "egress", "both"] = "both"
        port: int | None = Field(default=None, ge=1, le=65535)
        loss: float | None = Field(default=None, gt=0, le=1)

        @model_validator(mode="after")
        def _loss_drops(self) -> NetworkPartitionFault.Config:
            if self.loss is not None and self.action != "drop":
                raise ValueError("loss applies to action 'drop' only")
            if (self.namespace is None) == (self.target is None):
                raise ValueError("give exactly one of 'namespace' or 'target'")
            return self

    name: ClassVar[str] = "network_partition"
    target_roles: ClassVar[tuple[str, ...] | None] = ("feature_store",)
    modes: ClassVar[tuple[str, ...]] = ("drop", "reject", "loss")
    needs: ClassVar[tuple[str, ...]] = ("root", "iptables", "network namespace")
    verifies: ClassVar[str] = "rules present, packet counters, a real connection times out/refused"
    example: ClassVar[dict[str, Any]] = {"target": "feature-store", "action": "drop"}
    kubernetes = PartitionAction  # on a Kubernetes target: faults/kube/objects.py (the API)

    @staticmethod
    def _resolve(config: Config, ctx: FaultContext) -> tuple[str, PartitionRule, list[object] | None]:
        """Namespace, rule and (for a target) the ``[host, port]`` that ``verify`` probes."""
        if config.target is None:
            assert config.namespace is not None
            return config.namespace, PartitionRule(config.action, config.direction, config.port,
                                                   config.loss), None
        handle = ctx.topology.get(config.target)
        if handle.netns is None:
            raise ConfigError(f"target '{config.target}' runs in no network namespace "
                              "(start it in one, e.g. LocalStack(feature_store_netns=True))",
                              field="target")
        port = config.port or handle.port
        host = urlsplit(handle.url).hostname if handle.url else None
        probe: list[object] | None = [host, port] if host and port else None
        return handle.netns, PartitionRule(config.action, config.direction, port, config.loss), probe

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        namespace, _, _ = self._resolve(config, ctx)
        problems = []
        if os.geteuid() != 0:
            problems.append(Problem("not_root", "iptables in a namespace needs root",
                                    "run faultdrill as root"))
        for tool in ("ip", "iptables"):
            if shutil.which(tool) is None:
                problems.append(Problem(f"no_{tool}", f"'{tool}' is not installed",
                                        "apt-get install iproute2 iptables"))
        if not Path("/run/netns", namespace).exists():
            problems.append(Problem("no_namespace", f"namespace {namespace} not found",
                                    "start the target with a network namespace"))
        try:
            ctx.scope.check_netns(namespace)
        except FaultdrillError as exc:
            problems.append(Problem("blast_radius", str(exc)))
        return problems

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        namespace, rule, _ = self._resolve(config, ctx)
        return [
            " ".join(netns_exec(namespace, ["iptables", "-I", *argv]))
            for argv in rule_argvs(rule, "<injection-id>")
        ]

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        namespace, rule, probe = self._resolve(config, ctx)
        ctx.scope.check_netns(namespace)
        mode = "loss" if config.loss is not None else config.action
        placeholder = self.new_injection(config, ctx, mode=mode, target=config.target or namespace,
                                         undo={})
        argvs = rule_argvs(rule, placeholder.id)
        injection = placeholder.model_copy(
            update={"undo": {"namespace": namespace, "rules": argvs, "probe": probe}}
        )
        return self.apply_recorded(
            injection, ctx, lambda: add_rules(namespace, [rule], injection.id)
        )

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        # By tag, not by stored argv: removes exactly what is there, even a partial insert.
        remove_rules(injection.undo["namespace"], injection.id)

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        namespace = injection.undo["namespace"]
        present = list_rules(namespace, injection.id)
        expected = len(injection.undo["rules"])
        packets = _matched_packets(namespace, injection.id)
        details: dict[str, object] = {"rules_present": len(present), "rules_expected": expected,
                                      "packets_matched": packets}
        effective = len(present) == expected
        probe = injection.undo.get("probe")
        if probe and injection.mode != "loss":  # loss lets a random share through: no verdict
            outcome, ms = _probe_connect(str(probe[0]), int(probe[1]))
            details.update(probe=outcome, probe_ms=ms)
            effective = effective and outcome != "connected"
        return Verification(
            effective=effective, details=details,
            message=f"{len(present)}/{expected} rules in {namespace}, {packets} packets matched"
            + (f", probe {details['probe']} in {details['probe_ms']} ms" if "probe" in details else ""),
        )  # fmt: skip


def _probe_connect(host: str, port: int, timeout: float = 0.3) -> tuple[str, float]:
    """A real TCP connect: ``connected``, ``refused`` or ``timeout``, with its duration."""
    started = time.perf_counter()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        outcome = "connected"
    except TimeoutError:
        outcome = "timeout"
    except ConnectionError:  # refused or reset: the port turned us away
        outcome = "refused"
    except OSError:  # e.g. no route: the peer is unreachable, which is a partition too
        outcome = "timeout"
    return outcome, round((time.perf_counter() - started) * 1000, 2)


def _matched_packets(namespace: str, injection_id: str) -> int:
    """Sum of the kernel's packet counters over this injection's rules."""
    if not Path("/run/netns", namespace).exists():
        return 0
    out = subprocess.run(
        netns_exec(namespace, ["iptables", "-w", "5", "-L", "-v", "-n", "-x"]),
        capture_output=True, text=True, timeout=30, check=False,
    ).stdout
    total = 0
    for line in out.splitlines():
        words = line.split()
        if f"faultdrill:{injection_id}" in line and words and words[0].isdigit():
            total += int(words[0])
    return total
