"""The local platform running a service of the user's, for real: the bundled target started as a ``kind: process``
command (2 replicas: ports per replica, readiness, a SIGKILL restarted by the platform, memory cgroups, ledger
records, everything stopped on close — checked in the process table), a small stdlib server reaching its declared
dependencies through fault proxies (``via.env`` and ``via.arg``), a ``kind: url`` server observed and fronted by a
proxy, a killed run's processes stopped by ``faultdrill rollback --pending``, and one ``faultdrill run`` of the
shipped example end to end. No mocks: real processes, sockets, cgroups and proxies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from faultdrill.experiments.engine.plan import build_plan
from faultdrill.experiments.host.process import ServiceError, free_port
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms import build_platform
from faultdrill.experiments.platforms.local.platform import LocalPlatform
from faultdrill.experiments.spec.loader import load_experiment
from faultdrill.faults.cgroups import detect_memory_controller
from faultdrill.faults.owned import Owner
from faultdrill.faults.procid import pid_alive, process_start_ticks
from faultdrill.faults.proxy_control import ProxyControl
from faultdrill.faults.records import Ledger
from faultdrill.faults.registry import FaultRegistry

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "experiments" / "examples" / "process" / "bundled_as_process.yaml"
SERVER = Path(__file__).resolve().parent / "byo_server.py"
HAS_CGROUP = os.geteuid() == 0 and detect_memory_controller() is not None
INFER = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
HEAD = ("apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: mine}\n"
        "load: {protocol: {kind: http, method: GET, path: /ready}}\n")  # what the load would send these servers


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout}s")


def _platform(text: str, spec_file: Path, workdir: Path, owner: Owner | None = None) -> LocalPlatform:
    spec_file.write_text(text)
    registry = FaultRegistry.installed()
    plan = build_plan(load_experiment(spec_file, registry), registry, source=spec_file)
    platform = build_platform(plan.spec.target, system=plan.system, timeline=Timeline(), workdir=workdir, owner=owner)
    assert isinstance(platform, LocalPlatform)
    return platform


def _alive(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def _descendants() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]


# -- the bundled target as a process service: two replicas under the kubelet ------------------------------------
def test_two_replicas_of_a_process_service_are_supervised_like_pods(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("  memory_limit: 700Mi\n", "  memory_limit: 700Mi\n" if HAS_CGROUP else "")
    text = text.replace("      liveness: /v2/health/live\n", "      liveness: {exec: [\"{python}\", -c, "
                        "\"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/v2/health/live', "
                        "timeout=1)\"]}\n")  # an exec probe: the replica's own port filled into its argv
    state = tmp_path / "state"
    owner = Owner.current(state)
    platform = _platform(text, tmp_path / "spec.yaml", tmp_path / "run", owner)
    with platform:
        assert platform.ready_replicas() == ["web-0", "web-1"]
        handles = {n: platform.handle(n) for n in ("web-0", "web-1")}
        assert len({h.port for h in handles.values()}) == 2  # a port per replica
        for name, h in handles.items():
            assert h.pid is not None and h.url == f"http://127.0.0.1:{h.port}" and h.metrics_url == f"{h.url}/metrics"
            assert httpx.get(f"{h.url}/v2").json()["model"]["name"] == "digits"
            assert (tmp_path / "run" / f"models-{name}" / "digits").is_dir()  # {workdir}/models-{replica}
        with httpx.Client(base_url=platform.service_url, timeout=10) as client:
            served = {client.post("/v2/models/digits/infer", json=INFER).headers["x-faultdrill-replica"]
                      for _ in range(10)}  # fmt: skip
        assert served == {"web-0", "web-1"}
        records = {r.target: r for r in Ledger(state).pending() if r.fault == "process"}
        assert {"web-0", "web-1"} <= set(records)  # a ledger record while it runs
        if HAS_CGROUP:
            for h in handles.values():
                assert h.cgroup is not None and Path(h.cgroup).name in Path(f"/proc/{h.pid}/cgroup").read_text()
                assert int((Path(h.cgroup) / "memory.limit_in_bytes").read_text()) == 700 * 2**20
        liveness = _until(lambda: platform.timeline.select("probe", source="web-1", probe="liveness"), 30,
                          "an exec liveness sample for web-1")  # readiness can come first on a busy machine
        assert liveness[-1].attrs["value"] is True and liveness[-1].attrs["status"] == 0  # exit status

        since, old = platform.timeline.now(), handles["web-0"]
        platform.kill("web-0", signal.SIGKILL)
        restart = _until(lambda: platform.timeline.select("process", source="web-0", start=since, event="restart"),
                         30, "web-0 restarted by the platform")[0]  # fmt: skip
        (exit_,) = platform.timeline.select("process", source="web-0", start=since, event="exit")
        assert (exit_.attrs["reason"], exit_.attrs["code"], exit_.attrs["pid"]) == ("Signal", 137, old.pid)
        assert restart.attrs["pid"] != old.pid and platform.restarts("web-0") == 1
        assert platform.timeline.select("process", source="web-0", start=since, event="unready")
        _until(lambda: platform.ready_replicas() == ["web-0", "web-1"], 60, "web-0 ready again")
        new = platform.handle("web-0")
        assert new.port == old.port and not pid_alive(old.pid or 0, None)  # same pod port, a new process
        pids = {e.attrs["pid"] for e in platform.timeline.select("process") if e.attrs.get("pid")}
    assert not [p for p in pids if _alive(p)] and not _descendants()  # the process table, not the ledger
    assert not [r for r in Ledger(state).pending() if r.fault == "process"]
    if HAS_CGROUP:
        assert not [h.cgroup for h in handles.values() if h.cgroup and Path(h.cgroup).exists()]


# -- a replica is a container: what it started dies with it ----------------------------------------------------
@pytest.mark.root
def test_what_a_killed_replica_left_running_is_killed_before_it_restarts(tmp_path: Path) -> None:
    """The server's worker left its session and ignores SIGTERM; SIGKILL the server: the platform kills the worker
    (found in the replica's cgroup) before the restart, as a container runtime would, and says so on the timeline;
    the restarted replica's own worker is stopped on close."""
    if not HAS_CGROUP:
        pytest.skip("needs root and a memory cgroup controller")
    text = _service().replace('"--port", "{port}"]', '"--port", "{port}", "--worker"]')
    with _platform(text, tmp_path / "spec.yaml", tmp_path / "run") as platform:
        first = httpx.get(f"{platform.handle('tiny-0').url}/whoami").json()
        worker_start = process_start_ticks(first["worker"])
        assert os.getpgid(first["worker"]) != os.getpgid(first["pid"])  # not in the server's group: the cgroup finds it
        since = platform.timeline.now()
        platform.kill("tiny-0", signal.SIGKILL)
        _until(lambda: platform.timeline.select("process", source="tiny-0", start=since, event="restart"), 30,
               "tiny-0 restarted")  # fmt: skip
        (exit_,) = platform.timeline.select("process", source="tiny-0", start=since, event="exit")
        assert exit_.attrs["leftovers_killed"] == 1 and exit_.attrs["reason"] == "Signal"
        assert not pid_alive(first["worker"], worker_start)
        second = _until(lambda: _answers(f"{platform.handle('tiny-0').url}/ready")
                        and httpx.get(f"{platform.handle('tiny-0').url}/whoami").json(), 30, "tiny-0 answers again")
        assert second["worker"] != first["worker"] and _alive(second["worker"])
    assert not _alive(second["worker"]) and not _descendants()


# -- model_load_failure on the declared artifact -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["corrupt", "missing"])
def test_a_broken_declared_model_keeps_the_restarted_replica_out_and_is_restored_byte_for_byte(
    tmp_path: Path, mode: str
) -> None:  # fmt: skip
    """The server loads ``repo/m/model.json`` at start; the fault breaks that file (the declared artifact) and
    restarts tiny-1: it crash-loops, never ready, while tiny-0 (loaded before) serves; rollback puts the bytes back
    and tiny-1 serves the same answer again."""
    from faultdrill.faults.base import FaultContext
    from faultdrill.faults.model_load import ModelLoadFailureFault

    (tmp_path / "repo" / "m").mkdir(parents=True)
    artifact = tmp_path / "repo" / "m" / "model.json"
    artifact.write_text(json.dumps({"answer": 42, "weights": list(range(200))}))
    original = artifact.read_bytes()
    text = _service(extra='    model: {name: m, repository: "{spec_dir}/repo", artifact: m/model.json}\n')
    text = text.replace('"--port", "{port}"]', '"--port", "{port}", "--model", "{spec_dir}/repo/m/model.json"]')
    with _platform(text.replace("target:\n", "target:\n  replicas: 2\n"), tmp_path / "spec.yaml",
                   tmp_path / "run") as platform:  # fmt: skip
        assert platform.topology().get("tiny-1").model_artifact == artifact
        ctx = FaultContext.create(tmp_path / "state", topology=platform.topology(), scope=platform.scope(),
                                  supervisor=platform)  # fmt: skip
        fault = ModelLoadFailureFault()
        cfg = fault.parse_config({"target": "tiny-1", "mode": mode, "duration_s": 20})
        assert fault.preflight(cfg, ctx) == []
        assert fault.preflight(fault.parse_config({"target": "tiny-1", "mode": "bad_version"}), ctx)[0].code == \
            "no_version_switch"  # fmt: skip
        inj = fault.inject(cfg, ctx)
        try:
            v = fault.verify(inj, ctx)
            assert v.effective, v.message
            assert v.details["exit_code"] == 1 and not v.details["ever_ready"] and "crash-loops" in v.details["outcome"]
            assert "model load failed" in (v.details["said"] or "") and "never ready" in v.message
            assert platform.ready_replicas() == ["tiny-0"]
            assert httpx.get(f"{platform.service_url}/answer", timeout=5).json() == 42
        finally:
            fault.undo(inj, ctx)
        assert artifact.read_bytes() == original
        assert platform.ready_replicas() == ["tiny-0", "tiny-1"] or _until(
            lambda: platform.ready_replicas() == ["tiny-0", "tiny-1"], 20, "tiny-1 ready again")
        assert httpx.get(f"{platform.handle('tiny-1').url}/answer", timeout=5).json() == 42


# -- dependencies through fault proxies ---------------------------------------------------------------------------
def _service(deps: str = "", extra: str = "") -> str:
    return HEAD + f"""target:
  service:
    kind: process
    name: tiny
    command: ["{{python}}", "{SERVER}", "--port", "{{port}}"]
    cwd: "{{workdir}}"
    probes: {{readiness: /ready, liveness: /healthz}}
{deps}{extra}"""


def test_declared_dependencies_are_reached_through_their_fault_proxies(
    tmp_path: Path, serve_text: Callable[[str], str]
) -> None:  # fmt: skip
    features, other = serve_text("features"), serve_text("features")
    deps = f"""    dependencies:
      - {{name: features, url: "{features}", via: {{env: FEATURES_URL}}}}
      - {{name: other, url: "{other}", via: {{arg: "--other-url={{url}}"}}}}
"""
    repo = '    model: {name: m, repository: "{spec_dir}/repo"}\n'  # what model faults may change: in scope
    with _platform(_service(deps, repo), tmp_path / "spec.yaml", tmp_path / "run") as platform:
        topo = platform.topology()
        assert topo.get("tiny-0").model_registry == tmp_path / "repo"
        assert str(tmp_path / "repo") in platform.scope().paths
        assert sorted(topo.services) == ["features", "features-proxy", "other", "other-proxy", "service", "tiny-0"]
        assert topo.get("features").role == "dependency" and topo.get("features").url == features
        me = httpx.get(f"{topo.get('tiny-0').url}/whoami").json()
        assert me["cwd"] == str((tmp_path / "run").absolute())  # cwd templated: {workdir}
        proxy = topo.get("other-proxy")
        assert me["argv_other"] == f"http://127.0.0.1:{proxy.port}"  # via.arg: the proxy's address
        with httpx.Client(base_url=platform.service_url, timeout=10) as client:
            assert client.get("/dep").text == "features" and client.get("/other").text == "features"
            for name in ("features-proxy", "other-proxy"):
                h = topo.get(name)
                assert h.control_url is not None and h.admin_token_file is not None
                ctl = ProxyControl(h.control_url, h.admin_token_file.read_text().strip())
                assert ctl.state()["bytes_to_client"] > 0  # the answer came through the proxy
                ctl.close()
            store = topo.get("features-proxy")
            assert store.control_url is not None and store.admin_token_file is not None
            ctl = ProxyControl(store.control_url, store.admin_token_file.read_text().strip())
            ctl.set_mode("refuse")  # a fault on the edge: the service sees its dependency gone
            assert client.get("/dep").status_code == 502 and client.get("/other").status_code == 200
            ctl.set_mode("passthrough")
            assert client.get("/dep").text == "features"
            ctl.close()
        proxies = [h.pid for h in topo.by_role("proxy") if h.pid]
    assert len(proxies) == 2 and not [p for p in proxies if _alive(p)]


def test_a_dependency_with_a_command_is_started_before_and_stopped_after_the_replicas(tmp_path: Path) -> None:
    """``dependencies[].command``: faultdrill starts it (a ledger record), waits for its port, puts the fault proxy
    in front, and stops it after the replicas; a port already taken is refused before anything starts."""
    port = free_port()
    deps = (f"    dependencies:\n      - {{name: features, url: \"http://127.0.0.1:{port}\",\n"
            f"         via: {{env: FEATURES_URL}}, command: [\"{{python}}\", \"{SERVER}\", --port, \"{port}\"]}}\n")
    state = tmp_path / "state"
    with _platform(_service(deps), tmp_path / "spec.yaml", tmp_path / "run", Owner.current(state)) as platform:
        dep = platform.topology().get("features")
        assert dep.pid is not None and _alive(dep.pid) and dep.role == "dependency"
        assert "features" in {r.target for r in Ledger(state).pending()}  # stopped by rollback --pending too
        assert httpx.get(f"{platform.service_url}/dep", timeout=5).text == "features"  # through its fault proxy
    assert not _alive(dep.pid) and not _descendants()
    blocker = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port)], start_new_session=True)
    try:
        _until(lambda: _answers(f"http://127.0.0.1:{port}/ready"), 20, "the blocker answers")
        with pytest.raises(ServiceError, match="already taken"):
            _platform(_service(deps), tmp_path / "spec2.yaml", tmp_path / "run2").up()
    finally:
        blocker.kill()
        blocker.wait(5)


# -- a server already running ------------------------------------------------------------------------------------
@pytest.fixture
def running_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port)], start_new_session=True)
    _until(lambda: _answers(f"http://127.0.0.1:{port}/ready"), 20, "the server answers")
    yield server, port
    server.kill()
    server.wait(5)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_url_server_is_probed_and_routed_to_through_its_proxy(
    tmp_path: Path, running_server: tuple[subprocess.Popen[bytes], int]
) -> None:  # fmt: skip
    server, port = running_server
    text = HEAD + f"""target:
  service:
    kind: url
    url: http://127.0.0.1:{port}
    probes: {{readiness: /ready}}
    allow: {{pids: [{server.pid}]}}
"""
    with _platform(text, tmp_path / "spec.yaml", tmp_path / "run") as platform:
        assert platform.ready_replicas() == ["server-0"]
        topo = platform.topology()
        handle, proxy = topo.get("server-0"), topo.get("server-0-proxy")
        assert handle.url == f"http://127.0.0.1:{port}" and handle.pid == server.pid
        assert server.pid in platform.scope().pids  # allow-listed: process faults may touch it
        # The endpoint follows readiness as kube-proxy follows EndpointSlices: a moment later (Envoy reloads its
        # EDS file), which a busy machine stretches; until then it answers 503 "no healthy upstream" itself.
        _until(lambda: httpx.get(f"{platform.service_url}/whoami", timeout=5).status_code != 503, 10,
               "the endpoint routes to the ready server")  # fmt: skip
        answer = httpx.get(f"{platform.service_url}/whoami", timeout=5)
        assert answer.headers["x-faultdrill-replica"] == "server-0" and answer.json()["pid"] == server.pid
        assert proxy.control_url is not None and proxy.admin_token_file is not None
        ctl = ProxyControl(proxy.control_url, proxy.admin_token_file.read_text().strip())
        assert ctl.state()["connections_total"] >= 1  # the endpoint went through the fault proxy
        ctl.close()
        with pytest.raises(ServiceError, match="did not start"):
            platform.stop("server-0")
        platform.start("server-0")  # not ours to start: nothing happens
        assert platform.exit_status("server-0") is None
    assert server.poll() is None and _answers(f"http://127.0.0.1:{port}/ready")  # left running: it is theirs
    assert proxy.pid is not None and not _alive(proxy.pid)


# -- a killed run ------------------------------------------------------------------------------------------------
CRASHING_RUN = textwrap.dedent(
    """
    import json, sys, threading, time
    from pathlib import Path
    from faultdrill.experiments.engine.plan import build_plan
    from faultdrill.experiments.journal.timeline import Timeline
    from faultdrill.experiments.platforms import build_platform
    from faultdrill.experiments.spec.loader import load_experiment
    from faultdrill.faults.owned import Owner
    from faultdrill.faults.registry import FaultRegistry

    spec, state, workdir = sys.argv[1:4]
    registry = FaultRegistry.installed()
    plan = build_plan(load_experiment(spec, registry), registry, source=spec)
    platform = build_platform(plan.spec.target, system=plan.system, timeline=Timeline(), workdir=Path(workdir),
                              owner=Owner.current(state))
    # Off the main thread, as the platform's own restarts are: no parent-death signal, only the ledger record.
    up = threading.Thread(target=platform.up)
    up.start(); up.join()
    print("up", json.dumps([h.pid for h in platform.topology().services.values() if h.pid]), flush=True)
    time.sleep(600)
    """
)


def test_a_killed_runs_processes_are_stopped_by_rollback_pending(tmp_path: Path) -> None:
    """And what the replicas started (a worker outside their process group, ignoring SIGTERM): through their
    cgroups, named in the ledger records, when the host has a memory controller."""
    features = f"http://127.0.0.1:{free_port()}"  # nothing listens: the proxy starts all the same
    deps = f"    dependencies:\n      - {{name: features, url: \"{features}\", via: {{env: FEATURES_URL}}}}\n"
    spec = tmp_path / "spec.yaml"
    text = _service(deps).replace("target:\n", "target:\n  replicas: 2\n")
    spec.write_text(text.replace('"--port", "{port}"]', '"--port", "{port}", "--worker"]') if HAS_CGROUP else text)
    state = tmp_path / "state"
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(state)}
    run = subprocess.Popen([sys.executable, "-c", CRASHING_RUN, str(spec), str(state), str(tmp_path / "run")],
                           env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    try:
        assert run.stdout is not None
        line = _until(lambda: run.stdout.readline() if run.stdout else "", 60, "the child's platform up")  # type: ignore[union-attr]
        assert line.startswith("up "), line
        pids = json.loads(line.split(" ", 1)[1])
        assert len(pids) == 3  # two replicas and the dependency's fault proxy
        if HAS_CGROUP:  # their workers: children of the replicas, in no group faultdrill signals
            pids += [c.pid for p in pids for c in psutil.Process(p).children() if "sleep(600)" in " ".join(c.cmdline())]
            assert len(pids) == 5
        starts = {p: process_start_ticks(p) for p in pids}
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        time.sleep(0.5)
        assert all(pid_alive(p, s) for p, s in starts.items())  # orphans: only the ledger knows them now
        done = subprocess.run([sys.executable, "-m", "faultdrill", "rollback", "--pending"], capture_output=True,
                              text=True, env=env, cwd=ROOT, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        _until(lambda: not [p for p, s in starts.items() if pid_alive(p, s)], 10, "every process stopped")
        assert not list((state / "ledger").glob("*.json"))
    finally:
        run.kill()
        run.wait(10)


# -- end to end ------------------------------------------------------------------------------------------------
@pytest.mark.system
@pytest.mark.tools("prometheus", "prometheus-alertmanager")
def test_faultdrill_run_of_the_process_example_passes(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "faultdrill", "run", str(EXAMPLE), "--out", str(tmp_path / "runs"),
                           "--plain"], capture_output=True, text=True, cwd=ROOT, timeout=280)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [journal] = [j for j in (tmp_path / "runs").glob("*/journal.json") if not j.parent.is_symlink()]
    doc = json.loads(journal.read_text())
    assert [v["passed"] for v in doc["verdicts"]] == [True] * 4
    restarts = [e for e in doc["events"] if e.get("kind") == "process" and e.get("source") == "web-0"
                and (e.get("attrs") or {}).get("event") == "restart"]  # fmt: skip
    assert restarts, "the platform restarted the killed replica"
