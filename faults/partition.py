"""``NetworkPartitionFault``: drop, reject or lose packets inside a faultdrill namespace.

Kernel-level (iptables in the namespace), so existing connections see the partition too,
exactly as they would in a real one. Latency, jitter and bandwidth are the proxy's job
(tc netem is not available on this kernel).

Example::

    fault = NetworkPartitionFault()
    cfg = fault.parse_config({"namespace": "fd-t1", "action": "reject", "port": 8000})
    inj = fault.inject(cfg, ctx)                # ledger first, then the rules
    assert fault.verify(inj, ctx).effective     # rules present, packet counters read
    fault.undo(inj, ctx)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faults.errors import FaultdrillError
from faults.netns import (
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
        namespace: str = Field(pattern=rf"^{PREFIX}[a-z0-9]{{1,11}}$")
        action: Literal["drop", "reject"] = "drop"
        direction: Literal["ingress", "egress", "both"] = "both"
        port: int | None = Field(default=None, ge=1, le=65535)
        loss: float | None = Field(default=None, gt=0, le=1)

        @model_validator(mode="after")
        def _loss_drops(self) -> NetworkPartitionFault.Config:
            if self.loss is not None and self.action != "drop":
                raise ValueError("loss applies to action 'drop' only")
            return self

    name: ClassVar[str] = "network_partition"
    modes: ClassVar[tuple[str, ...]] = ("drop", "reject", "loss")

    @staticmethod
    def _rule(config: Config) -> PartitionRule:
        return PartitionRule(config.action, config.direction, config.port, config.loss)

    def preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        problems = []
        if os.geteuid() != 0:
            problems.append(Problem("not_root", "iptables in a namespace needs root",
                                    "run faultdrill as root"))
        for tool in ("ip", "iptables"):
            if shutil.which(tool) is None:
                problems.append(Problem(f"no_{tool}", f"'{tool}' is not installed",
                                        "apt-get install iproute2 iptables"))
        if not Path("/run/netns", config.namespace).exists():
            problems.append(Problem("no_namespace", f"namespace {config.namespace} not found",
                                    "start the target with a network namespace"))
        try:
            ctx.scope.check_netns(config.namespace)
        except FaultdrillError as exc:
            problems.append(Problem("blast_radius", str(exc)))
        return problems

    def plan(self, config: Config, ctx: FaultContext) -> list[str]:
        return [
            " ".join(netns_exec(config.namespace, ["iptables", "-I", *argv]))
            for argv in rule_argvs(self._rule(config), "<injection-id>")
        ]

    def inject(self, config: Config, ctx: FaultContext) -> Injection:
        ctx.scope.check_netns(config.namespace)
        mode = "loss" if config.loss is not None else config.action
        placeholder = self.new_injection(config, ctx, mode=mode, target=config.namespace,
                                         undo={})
        argvs = rule_argvs(self._rule(config), placeholder.id)
        injection = placeholder.model_copy(
            update={"undo": {"namespace": config.namespace, "rules": argvs}}
        )
        return self.apply_recorded(
            injection, ctx, lambda: add_rules(config.namespace, [self._rule(config)], injection.id)
        )

    def rollback(self, injection: Injection, ctx: FaultContext) -> None:
        # By tag, not by stored argv: removes exactly what is there, even a partial insert.
        remove_rules(injection.undo["namespace"], injection.id)

    def verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        namespace = injection.undo["namespace"]
        present = list_rules(namespace, injection.id)
        expected = len(injection.undo["rules"])
        packets = _matched_packets(namespace, injection.id)
        return Verification(
            effective=len(present) == expected,
            details={"rules_present": len(present), "rules_expected": expected,
                     "packets_matched": packets},
            message=f"{len(present)}/{expected} rules in {namespace}, {packets} packets matched",
        )


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
