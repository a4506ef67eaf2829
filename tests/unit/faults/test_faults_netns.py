"""Kernel partitions for real: a server in a namespace, a client on the host."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faults_helpers import child_env, start_python, wait_for_line

from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.errors import BlastRadiusError, ConfigError
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.netns import (
    Namespace,
    PartitionRule,
    create_namespace,
    delete_namespace,
    list_namespaces,
    list_rules,
    netns_exec,
    rule_argvs,
)
from faultdrill.faults.partition import NetworkPartitionFault
from faultdrill.faults.registry import FaultRegistry

PORT = 8765
can_netns = os.geteuid() == 0 and shutil.which("ip") and shutil.which("iptables")


def needs_netns(test: Callable[..., None]) -> Callable[..., None]:
    """Root (skip without: this machine cannot), and iproute2 + iptables (`make setup`: with CI=true, required)."""
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces")(
        pytest.mark.tools("ip", "iptables")(test))

ECHO = textwrap.dedent(
    """
    import socket, sys, threading
    srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
    print("listening", flush=True)
    def serve(conn):
        with conn:
            for _ in range(100000):
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)
    for _ in range(1000):
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    """
)


def test_rule_argvs_are_tagged_and_directional() -> None:
    both = rule_argvs(PartitionRule("reject", "both", port=80), "abc")
    assert [a[0] for a in both] == ["INPUT", "OUTPUT"]
    assert both[0][-4:] == ["-j", "REJECT", "--reject-with", "tcp-reset"]
    assert "--dport" in both[0] and "--sport" in both[1]
    assert all("faultdrill:abc" in a for a in both)
    [loss] = rule_argvs(PartitionRule("drop", "ingress", probability=0.25), "x")
    assert loss[0] == "INPUT" and "0.2500" in loss and "-p" not in loss


def test_config_validation() -> None:
    fault = NetworkPartitionFault()
    with pytest.raises(ConfigError, match="namespace"):
        fault.parse_config({"namespace": "default"})
    with pytest.raises(ConfigError, match="loss applies"):
        fault.parse_config({"namespace": "fd-a", "action": "reject", "loss": 0.5})


def test_foreign_namespace_is_refused(tmp_path: Path) -> None:
    ctx = FaultContext.create(tmp_path)
    fault = NetworkPartitionFault()
    cfg = fault.parse_config({"namespace": "fd-notours"})
    assert "blast_radius" in [p.code for p in fault.preflight(cfg, ctx)]
    with pytest.raises(BlastRadiusError, match="fd-notours"):
        fault.inject(cfg, ctx)
    with pytest.raises(BlastRadiusError):
        delete_namespace("default")
    assert ctx.ledger.ids() == []


@pytest.fixture(scope="module")
def netns(require_tools: Callable[..., None]) -> Iterator[Namespace]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    require_tools("ip", "iptables")
    ns = create_namespace("t" + uuid.uuid4().hex[:8])
    server = subprocess.Popen(
        netns_exec(ns.name, [sys.executable, "-c", ECHO, ns.ns_addr, str(PORT)]),
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == "listening\n"
        yield ns
    finally:
        server.kill()
        server.wait(10)
        delete_namespace(ns.name)
    # Nothing of ours is left: no namespace, no veth on the host.
    assert ns.name not in list_namespaces()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert ns.host_if not in links
    assert ns.name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                         text=True).stdout


@pytest.fixture
def ctx(tmp_path: Path, netns: Namespace) -> FaultContext:
    return FaultContext.create(tmp_path / "state", scope=Scope().with_netns(netns.name))


def _echo(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    return sock.recv(100)


@needs_netns
def test_drop_times_out_existing_and_new_then_heals(ctx: FaultContext, netns: Namespace) -> None:
    fault = NetworkPartitionFault()
    cfg = fault.parse_config({"namespace": netns.name, "action": "drop", "port": PORT})
    assert fault.preflight(cfg, ctx) == []
    keepalive = socket.create_connection((netns.ns_addr, PORT), timeout=0.5)
    assert _echo(keepalive) == b"ping"
    inj = fault.inject(cfg, ctx)
    try:
        with pytest.raises(TimeoutError):
            _echo(keepalive)  # the existing connection sees the partition
        with pytest.raises(TimeoutError):
            socket.create_connection((netns.ns_addr, PORT), timeout=0.5)
        check = fault.verify(inj, ctx)
        assert check.effective and check.details["packets_matched"] > 0
    finally:
        fault.undo(inj, ctx)
        keepalive.close()
    assert list_rules(netns.name) == []
    assert not fault.verify(inj, ctx).effective
    with socket.create_connection((netns.ns_addr, PORT), timeout=2) as sock:
        assert _echo(sock) == b"ping"


@needs_netns
def test_reject_refuses_quickly(ctx: FaultContext, netns: Namespace) -> None:
    fault = NetworkPartitionFault()
    cfg = fault.parse_config({"namespace": netns.name, "action": "reject", "port": PORT,
                              "direction": "ingress"})
    inj = fault.inject(cfg, ctx)
    try:
        start = time.perf_counter()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((netns.ns_addr, PORT), timeout=2)
        assert time.perf_counter() - start < 0.5
    finally:
        fault.undo(inj, ctx)
    with socket.create_connection((netns.ns_addr, PORT), timeout=2) as sock:
        assert _echo(sock) == b"ping"


@needs_netns
def test_loss_rule_is_installed_with_probability(ctx: FaultContext, netns: Namespace) -> None:
    fault = NetworkPartitionFault()
    cfg = fault.parse_config({"namespace": netns.name, "loss": 0.3, "direction": "egress"})
    inj = fault.inject(cfg, ctx)
    try:
        [line] = list_rules(netns.name, inj.id)
        # iptables prints the probability back as the nearest 2^-31 step: 0.29999999981.
        assert "--probability 0.2999" in line and line.startswith("-A OUTPUT")
        assert inj.mode == "loss"
    finally:
        fault.undo(inj, ctx)
    assert list_rules(netns.name) == []


CHILD = textwrap.dedent(
    """
    import time
    from faultdrill.faults.base import FaultContext, Scope
    from faultdrill.faults.fake import FakeFault
    from faultdrill.faults.partition import NetworkPartitionFault
    ctx = FaultContext.create({state!r}, scope=Scope().with_netns({ns!r}).with_paths({path!r}))
    fake, part = FakeFault(), NetworkPartitionFault()
    fake.inject(fake.parse_config({{"path": {path!r} + "/flag", "content": "broken"}}), ctx)
    part.inject(part.parse_config({{"namespace": {ns!r}, "action": "drop"}}), ctx)
    print("injected", flush=True)
    time.sleep(60)
    """
)


@needs_netns
def test_crash_mid_fault_then_rollback_pending(
    ctx: FaultContext, netns: Namespace, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "flag").write_text("original")
    proc = start_python(CHILD.format(state=str(ctx.state_dir), ns=netns.name, path=str(files)))
    try:
        wait_for_line(proc, "injected")
        assert len(list_rules(netns.name)) == 2
        with pytest.raises(TimeoutError):
            socket.create_connection((netns.ns_addr, PORT), timeout=0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    registry = FaultRegistry()
    registry.register(NetworkPartitionFault)
    from faultdrill.faults.fake import FakeFault

    registry.register(FakeFault)
    results = rollback_pending(registry, ctx)
    assert sorted(r.outcome for r in results) == [RollbackOutcome.ROLLED_BACK] * 2
    # The system state, not the ledger, shows nothing left.
    assert list_rules(netns.name) == []
    assert (files / "flag").read_text() == "original"
    with socket.create_connection((netns.ns_addr, PORT), timeout=2) as sock:
        assert _echo(sock) == b"ping"
    assert rollback_pending(registry, ctx) == []
    assert child_env()["PYTHONPATH"]


@needs_netns
def test_concurrent_creators_never_share_an_address_block() -> None:
    """Two runs on one host (or two test workers) create namespaces at once: each gets its own /30."""
    from concurrent.futures import ThreadPoolExecutor

    suffixes = ["c" + uuid.uuid4().hex[:8] for _ in range(6)]
    made: list[Namespace] = []
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            made = list(pool.map(create_namespace, suffixes))
        assert len({ns.host_addr for ns in made}) == len(made), [ns.host_addr for ns in made]
    finally:
        for ns in made:
            delete_namespace(ns.name)
