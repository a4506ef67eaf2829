"""Ports for started services: outside the range outgoing connections draw from, never handed out twice."""

from __future__ import annotations

import multiprocessing
import socket
from pathlib import Path
from typing import Any

import pytest

from faultdrill.experiments.host import ports
from faultdrill.experiments.host.ports import free_port, port_range


def _many(n: int, out: multiprocessing.Queue[list[int]], hold: Any = None) -> None:
    out.put([free_port() for _ in range(n)])
    if hold is not None:  # stay alive (reservations last while their process lives) until told
        hold.wait(60)


def test_ports_lie_outside_the_source_ports_of_outgoing_connections() -> None:
    """The CI failure this prevents: a connect() took a replica's admin port between pick and bind."""
    span = port_range()
    assert span is not None
    picked = [free_port() for _ in range(50)]
    assert all(span[0] <= p <= span[1] for p in picked)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(256)
        clients = [socket.create_connection(server.getsockname()) for _ in range(200)]
        try:
            sources = {c.getsockname()[1] for c in clients}
        finally:
            for c in clients:
                c.close()
    assert not sources & set(range(span[0], span[1] + 1))
    assert not sources & set(picked)


def test_two_processes_asking_at_once_never_get_the_same_port() -> None:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[list[int]] = ctx.Queue()
    hold = ctx.Event()
    procs = [ctx.Process(target=_many, args=(150, out, hold)) for _ in range(3)]
    for p in procs:
        p.start()
    mine = [free_port() for _ in range(50)]
    lists = [out.get(timeout=60) for _ in procs]
    hold.set()
    for p in procs:
        p.join(timeout=30)
    everything = [port for ports_ in lists for port in ports_] + mine
    assert len(everything) == len(set(everything)) == 500


def test_a_port_something_listens_on_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        monkeypatch.setattr(ports, "port_range", lambda: (port, port))
        assert ports._bindable("127.0.0.1", port) is False
        got = free_port()
        assert got != port  # falls back to a kernel-picked port, free right now
        with socket.socket() as s:
            s.bind(("127.0.0.1", got))


def test_reservations_of_dead_processes_are_released() -> None:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[list[int]] = ctx.Queue()
    child = ctx.Process(target=_many, args=(3, out))
    child.start()
    theirs = out.get(timeout=60)
    child.join(timeout=30)
    folder = ports._folder()
    free_port()  # the next ask sweeps them
    assert not any(f.name.startswith(f"{child.pid}-") for f in folder.iterdir())
    assert not set(theirs) & ports._held(folder)


def test_port_range_stays_clear_of_the_ephemeral_range(tmp_path: Path) -> None:
    proc = tmp_path / "range"
    proc.write_text("32768\t60999\n")
    assert port_range(proc) == (15000, 32767)
    proc.write_text("1024 50000\n")  # a widened ephemeral range: above it instead
    assert port_range(proc) == (50001, 65535)
    proc.write_text("1024 65000\n")  # nothing sensible left: the caller falls back to the kernel's pick
    assert port_range(proc) is None
    proc.write_text("garbage")
    assert port_range(proc) == (15000, 32767)
