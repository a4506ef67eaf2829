"""faultdrill's pytest plugin: chaos tests next to the other tests (entry point ``pytest11: faultdrill``).

**Run an experiment as a test** — the marker runs the file (or ``experiment=`` a spec dict);
failed expectations become one readable failure listing each (expected / observed), and
every expectation is a JUnit property of the testcase (``expectation N: NAME`` = ``passed``
or ``failed: observed …``)::

    @pytest.mark.faultdrill(experiment="experiments/catalog/smoke.yaml")
    def test_smoke(faultdrill_result):          # the body runs after the experiment passed
        assert faultdrill_result.journal.load["requests"] > 0

**Compose one in Python** — fixtures bring the target up, start load, inject faults (always
rolled back, also when the test errors) and the timeline is there to assert on::

    @pytest.mark.faultdrill(platform={"replicas": 2})
    def test_hog(faultdrill_platform, faultdrill_load, faultdrill_fault, faultdrill_expect):
        faultdrill_load(users=4)
        faultdrill_fault("gpu_memory_exhaustion", target="replica-0", id="hog", leave_free_mib=0)
        faultdrill_expect(faultdrill_platform.timeline, {"probe": "readiness", "replica": "replica-0",
                          "becomes": False, "within": "5s", "after": "hog.start"}, wait=True)

``faultdrill_run(spec)`` runs a file or a spec dict and returns the ``RunResult``.

Options: ``--faultdrill-smoke`` applies the **smoke profile** to every experiment it runs
(steady-state window ≤ 3 s, each fault ≤ 8 s, Locust ≤ 8 users in one process: the shape
of ``experiments/catalog/smoke.yaml``, which it leaves unchanged); ``--faultdrill-out DIR``
keeps run directories and reports there (default: a fresh temporary directory).

**Always rolls back**: fixtures undo their faults at teardown; an experiment rolls back in
its own ``finally``; Ctrl-C or SIGTERM (turned into KeyboardInterrupt while a faultdrill
test runs) ends the session after the rollbacks, and at the end of the session every ledger
record this process still owns — and every orphaned one — is undone (``faults.ledger``;
the state directory is ``$FAULTDRILL_STATE_DIR`` or ``~/.local/state/faultdrill``).

The plugin is loaded by every pytest run in an environment with faultdrill installed, so
it imports nothing heavy until a test uses it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from faultdrill.experiments.engine.run import RunResult
    from faultdrill.experiments.expect.judge import Verdict
    from faultdrill.experiments.platforms.base import Platform
    from faultdrill.faults.base import FaultContext, Injection, Verification

__all__ = [
    "SMOKE_PROFILE",
    "ActiveFault",
    "FaultdrillSession",
    "SmokeProfile",
    "check_expectation",
    "failure_report",
    "smoke_spec",
]

_SESSION = "faultdrill-session"


# -- the smoke profile -------------------------------------------------------------------------
@dataclass(frozen=True)
class SmokeProfile:
    """What ``--faultdrill-smoke`` caps: a spec already within it runs unchanged."""

    max_window_s: float = 3.0
    max_fault_s: float = 8.0
    max_users: int = 8


SMOKE_PROFILE = SmokeProfile()


def _seconds(value: Any) -> float:
    from faultdrill.experiments.timespec import parse_duration

    return float(parse_duration(value))


def smoke_spec(doc: Mapping[str, Any], profile: SmokeProfile = SMOKE_PROFILE) -> dict[str, Any]:
    """The spec document (YAML data) with the profile's caps applied; the input is not changed.

    >>> smoke_spec({"faults": [{"id": "a", "duration": "15s"}], "load": {"users": 32}})["faults"][0]["duration"]
    '8s'
    """
    out: dict[str, Any] = {k: v for k, v in doc.items()}
    steady = dict(out.get("steady_state") or {})
    if "window" not in steady or _seconds(steady["window"]) > profile.max_window_s:
        steady["window"] = f"{profile.max_window_s:g}s"
    out["steady_state"] = steady
    faults = []
    for f in out.get("faults") or []:
        f = dict(f)
        if _seconds(f.get("duration", 10.0)) > profile.max_fault_s:
            f["duration"] = f"{profile.max_fault_s:g}s"
        faults.append(f)
    out["faults"] = faults
    load = dict(out.get("load") or {})
    load["users"] = min(int(load.get("users", 8)), profile.max_users)
    load["spawn_rate"] = min(float(load.get("spawn_rate") or load["users"]), float(load["users"]))
    load["workers"] = 0
    out["load"] = load
    return out


# -- reporting ---------------------------------------------------------------------------------
def failure_report(result: RunResult, what: str = "experiment") -> str:
    """A readable failure: each expectation with ✔/✘, and for the failed ones expected and observed."""
    journal = result.journal
    name = journal.name if journal is not None else what
    failed = [v for v in result.verdicts if not v.passed]
    head = (f"faultdrill {what} '{name}' {journal.outcome if journal else 'did not run'} (exit {result.exit_code}): "
            f"{len(failed)} of {len(result.verdicts)} expectations failed")  # fmt: skip
    lines = [head]
    if journal is not None and journal.reason:
        lines.append(f"  reason: {journal.reason}")
    for v in result.verdicts:
        lines.append(f"  {'✔' if v.passed else '✘'} {v.name}")
        if not v.passed:
            lines += [f"      expected: {v.expected}", f"      observed: {v.observed}"]
    if result.run_dir is not None:
        lines.append(f"  run: {result.run_dir} (report.html, junit.xml, journal.json)")
    return "\n".join(lines)


def _record(item: pytest.Item, result: RunResult, source: str) -> None:
    """JUnit properties of the testcase: the experiment, its outcome, every expectation and its verdict."""
    props = item.user_properties
    journal = result.journal
    props.append(("faultdrill experiment", source))
    props.append(("faultdrill outcome", f"{journal.outcome if journal else 'not run'} (exit {result.exit_code})"))
    if result.run_dir is not None:
        props.append(("faultdrill run_dir", str(result.run_dir)))
    for i, v in enumerate(result.verdicts, start=1):
        props.append((f"expectation {i}: {v.name}", "passed" if v.passed else f"failed: observed {v.observed}"))


def check_expectation(timeline: Any, expectation: Mapping[str, Any] | Any, *, wait: bool | float = False,
                      steady_state: Any = None, item: pytest.Item | None = None) -> Verdict:  # fmt: skip
    """Evaluate one expectation (a spec-style mapping or model) on ``timeline``; a failure is a readable
    pytest failure. ``wait`` (True = its ``within``, or seconds) re-evaluates until it holds. With
    ``item``, the verdict becomes a JUnit property of that test."""
    from pydantic import TypeAdapter

    from faultdrill.experiments.expect import Expectation
    from faultdrill.experiments.expect.judge import evaluate

    x = TypeAdapter(Expectation).validate_python(expectation) if isinstance(expectation, Mapping) else expectation
    limit = float(getattr(x, "within", 0.0) or 0.0) + 1.0 if wait is True else float(wait or 0.0)
    deadline = time.monotonic() + limit
    verdict = evaluate(x, timeline, steady_state=steady_state)
    while not verdict.passed and time.monotonic() < deadline:
        time.sleep(0.1)
        verdict = evaluate(x, timeline, steady_state=steady_state)
    if item is not None:
        n = 1 + sum(1 for name, _ in item.user_properties if str(name).startswith("expectation "))
        item.user_properties.append((f"expectation {n}: {verdict.name}",
                                     "passed" if verdict.passed else f"failed: observed {verdict.observed}"))
    if not verdict.passed:
        pytest.fail(f"✘ {verdict.name}\n    expected: {verdict.expected}\n    observed: {verdict.observed}",
                    pytrace=False)  # fmt: skip
    return verdict


# -- the session -------------------------------------------------------------------------------
class FaultdrillSession:
    """The plugin's state for one pytest session (plugin name ``faultdrill-session``).

    ``runner`` is ``experiments.engine.run.run_experiment`` unless a conftest replaces it (tests of the
    plugin do, with a fake).
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.smoke: bool = bool(config.getoption("faultdrill_smoke"))
        out = config.getoption("faultdrill_out")
        self._out: Path | None = Path(out).absolute() if out else None
        self.runner: Callable[..., RunResult] | None = None
        self._previous_sigterm: Any = None
        self._armed = False
        self._owners: dict[Path, Any] = {}
        self._keepers: list[Any] = []  # faults.deadman.Keeper, one per owner

    @property
    def out(self) -> Path:
        if self._out is None:
            self._out = Path(tempfile.mkdtemp(prefix="faultdrill-pytest-"))
        self._out.mkdir(parents=True, exist_ok=True)
        return self._out

    def test_dir(self, item: pytest.Item) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.name)[:80]
        path = self.out / safe
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def state_dir() -> Path:
        from faultdrill.faults.records import default_state_dir

        return default_state_dir()

    def owner(self) -> Any:
        """``faults.owned.Owner`` of what the fixtures start (platform, load): ledger records while they run,
        with a dead-man watchdog from the first one, so a killed pytest leaves nothing running."""
        from faultdrill.faults.deadman import Keeper
        from faultdrill.faults.owned import Owner

        state = self.state_dir()  # one per state dir: a test may point FAULTDRILL_STATE_DIR elsewhere
        if state not in self._owners:
            keeper = Keeper(state, max_runtime_s=3600.0)
            self._keepers.append(keeper)
            self._owners[state] = Owner.current(state, on_record=keeper.ensure)
        return self._owners[state]

    # -- signals: SIGTERM ends the session like Ctrl-C (rollbacks run) -----------------------
    def arm(self) -> None:
        if self._armed or sys.platform == "win32":
            return
        with contextlib.suppress(ValueError):  # not the main thread: pytest-xdist and friends own signals
            self._previous_sigterm = signal.signal(signal.SIGTERM, _sigterm)
            self._armed = True

    def disarm(self) -> None:
        if self._armed:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._armed = False

    # -- experiments ---------------------------------------------------------------------------
    def resolve(self, experiment: str | Path, item: pytest.Item | None) -> Path:
        path = Path(experiment)
        if path.is_absolute():
            return path
        bases = [Path.cwd(), self.config.rootpath] + ([Path(str(item.path)).parent] if item is not None else [])
        return next((b / path for b in bases if (b / path).exists()), self.config.rootpath / path)

    def prepare(self, spec: str | Path | Mapping[str, Any], workdir: Path, item: pytest.Item | None) -> Path:
        """The spec file to run: the file itself, or a written copy (a dict, or the smoke profile)."""
        import yaml

        if isinstance(spec, Mapping):
            doc, origin = dict(spec), None
        else:
            origin = self.resolve(spec, item)
            if not self.smoke:
                return origin
            doc = yaml.safe_load(origin.read_text()) or {}
        if self.smoke:
            doc = smoke_spec(doc)
        if origin is not None:
            doc = _absolute_alerting(doc, origin.parent)
        name = str((doc.get("metadata") or {}).get("name") or "experiment")
        written = workdir / f"{name}{'.smoke' if self.smoke else ''}.yaml"
        written.write_text(yaml.safe_dump(doc, sort_keys=False))
        return written

    def run(self, spec: str | Path | Mapping[str, Any], item: pytest.Item, *, misconfigurations: Sequence[str] = (),
            no_alerts: bool = False, rules: str | Path | None = None) -> RunResult:  # fmt: skip
        """Run one experiment for ``item``; its verdicts become the item's JUnit properties."""
        from rich.console import Console

        self.arm()
        workdir = self.test_dir(item)
        path = self.prepare(spec, workdir, item)
        runner = self.runner
        extra: dict[str, Any] = {}
        if runner is None:
            from faultdrill.experiments.engine.run import run_experiment
            from faultdrill.gamedays.launch import GamedayLauncher
            from faultdrill.reports import write_all

            runner = run_experiment
            extra["runbooks"] = GamedayLauncher()  # experiments may attach runbooks to faults
            extra["reports"] = write_all  # report.html, report.md, junit.xml next to the journal
        console = Console(file=sys.stdout, width=120, color_system=None, force_terminal=False, soft_wrap=True)
        rules_file = self.resolve(rules, item) if rules else None
        result = runner(path, out=workdir / "runs", misconfigurations=tuple(misconfigurations), console=console,
                        plain=True, no_alerts=no_alerts, rules=rules_file, **extra)  # fmt: skip
        _record(item, result, str(spec) if not isinstance(spec, Mapping) else f"<spec {path.name}>")
        reason = result.journal.reason if result.journal is not None else ""
        if result.exit_code == 3 and reason.startswith("interrupted by"):
            raise KeyboardInterrupt(f"faultdrill: {reason} (the run rolled back everything it injected)")
        return result

    # -- the end of the session ---------------------------------------------------------------
    def rollback_leftovers(self, registry: Any = None) -> list[str]:
        """Undo ledger records this process still owns, then every orphaned one; one line each."""
        from faultdrill.faults.base import FaultContext
        from faultdrill.faults.ledger import rollback_owned, rollback_pending
        from faultdrill.faults.registry import FaultRegistry

        state = self.state_dir()
        if not (state / "ledger").is_dir():
            return []
        ctx = FaultContext.create(state)
        registry = registry or FaultRegistry.installed()
        lines = rollback_owned(registry, ctx, os.getpid())
        lines += [str(r) for r in rollback_pending(registry, ctx) if r.outcome.value != "skipped_live"]
        for keeper in self._keepers:  # the fixtures' watchdogs: gone with the last record
            keeper.settle()
        return lines


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt("SIGTERM")


def _absolute_alerting(doc: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative ``alerting.rules``/``alertmanager`` paths made absolute (the copy lives elsewhere)."""
    alerting = dict(doc.get("alerting") or {})
    for key in ("rules", "alertmanager"):
        value = alerting.get(key)
        if isinstance(value, str) and value != "default" and not Path(value).is_absolute():
            alerting[key] = str((base / value).resolve())
    return {**doc, "alerting": alerting} if alerting else doc


def _session(config: pytest.Config) -> FaultdrillSession:
    plugin = config.pluginmanager.get_plugin(_SESSION)
    assert isinstance(plugin, FaultdrillSession), "the faultdrill plugin is not configured"
    return plugin


# -- hooks -------------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faultdrill", "faultdrill chaos tests")
    group.addoption("--faultdrill-smoke", action="store_true", default=False,
                    help="apply the smoke profile to every experiment: steady-state window <= 3 s, each fault "
                         "<= 8 s, Locust <= 8 users in one process")  # fmt: skip
    group.addoption("--faultdrill-out", default=None, metavar="DIR",
                    help="where run directories and reports go (default: a new temporary directory)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faultdrill(experiment=None, misconfigurations=(), no_alerts=False, rules=None, platform=None): run a "
        "faultdrill experiment (file or spec dict) as this test; platform={...} configures faultdrill_platform",
    )
    config.pluginmanager.register(FaultdrillSession(config), _SESSION)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # After fixture teardown (pytest's own sessionfinish runs it, also after Ctrl-C): what is
    # still in the ledger for this process was not undone by a fixture or a run.
    plugin = session.config.pluginmanager.get_plugin(_SESSION)
    if isinstance(plugin, FaultdrillSession) and plugin._armed:
        for line in plugin.rollback_leftovers():
            sys.stderr.write(f"faultdrill: {line}\n")


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.pluginmanager.get_plugin(_SESSION)
    if isinstance(plugin, FaultdrillSession):
        plugin.disarm()
        config.pluginmanager.unregister(plugin, _SESSION)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Iterator[Any]:
    marker = pyfuncitem.get_closest_marker("faultdrill")
    if marker is None or marker.kwargs.get("experiment") is None:
        return (yield)
    kw = marker.kwargs
    result = _session(pyfuncitem.config).run(kw["experiment"], pyfuncitem,
                                             misconfigurations=kw.get("misconfigurations", ()),
                                             no_alerts=kw.get("no_alerts", False), rules=kw.get("rules"))  # fmt: skip
    if result.exit_code != 0:
        pytest.fail(failure_report(result), pytrace=False)
    if "faultdrill_result" in pyfuncitem.funcargs:
        pyfuncitem.funcargs["faultdrill_result"] = result
    return (yield)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = []
    for report in terminalreporter.getreports("passed") + terminalreporter.getreports("failed"):
        if report.when != "call":
            continue
        for name, value in report.user_properties:
            if str(name).startswith("expectation "):
                rows.append(f"{'✔' if value == 'passed' else '✘'} {report.nodeid}: {str(name).split(': ', 1)[-1]}")
    if rows:
        terminalreporter.write_sep("-", "faultdrill expectations")
        for row in rows:
            terminalreporter.write_line(row)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def faultdrill_result() -> RunResult | None:
    """The ``RunResult`` of the ``@pytest.mark.faultdrill(experiment=…)`` run of this test."""
    return None  # replaced by the marker's run before the test body is called


@pytest.fixture
def faultdrill_run(request: pytest.FixtureRequest) -> Callable[..., RunResult]:
    """``faultdrill_run(spec, *, misconfigurations=(), no_alerts=False, rules=None, check=False)``: run a spec
    file or dict (smoke profile applied with ``--faultdrill-smoke``); ``check`` fails the test readably."""
    session = _session(request.config)

    def run(spec: str | Path | Mapping[str, Any], *, misconfigurations: Sequence[str] = (), no_alerts: bool = False,
            rules: str | Path | None = None, check: bool = False) -> RunResult:  # fmt: skip
        result = session.run(spec, request.node, misconfigurations=misconfigurations, no_alerts=no_alerts,
                             rules=rules)  # fmt: skip
        if check and result.exit_code != 0:
            pytest.fail(failure_report(result), pytrace=False)
        return result

    return run


@pytest.fixture
def faultdrill_expect(request: pytest.FixtureRequest) -> Callable[..., Verdict]:
    """``faultdrill_expect(timeline, {"probe": "readiness", …}, wait=True)``: ``check_expectation`` whose
    verdict is also a JUnit property of this test."""

    def expect(timeline: Any, expectation: Mapping[str, Any] | Any, *, wait: bool | float = False,
               steady_state: Any = None) -> Verdict:  # fmt: skip
        return check_expectation(timeline, expectation, wait=wait, steady_state=steady_state, item=request.node)

    return expect


@pytest.fixture
def faultdrill_platform(request: pytest.FixtureRequest) -> Iterator[Platform]:
    """The bundled target up on this machine (``LocalPlatform``, from ``build_platform``; options from the marker's
    ``platform={…}``: replicas, memory_limit_bytes, feature_store_netns, replica_env, misconfigurations, or a
    ``system`` — a ``SystemDescription`` of the services to run instead of the bundled system those describe);
    always closed."""
    from faultdrill.experiments.journal.timeline import Timeline
    from faultdrill.experiments.platforms.build import build_platform

    session = _session(request.config)
    session.arm()
    marker = request.node.get_closest_marker("faultdrill")
    options = dict((marker.kwargs.get("platform") if marker else None) or {})
    env = dict(options.pop("replica_env", {}) or {})
    misconfigurations = options.pop("misconfigurations", None) or ()
    options.setdefault("replicas", 1)
    platform = build_platform(timeline=Timeline(), workdir=session.test_dir(request.node) / "platform",
                              replica_env=env, misconfigurations=misconfigurations, owner=session.owner(),
                              **options)  # fmt: skip
    platform.up()
    try:
        yield platform
    finally:
        platform.close()


@pytest.fixture
def faultdrill_load(request: pytest.FixtureRequest, faultdrill_platform: Platform) -> Iterator[Callable[..., Any]]:
    """``faultdrill_load(users=4, run_time="120s")``: Locust against the platform's service, its requests on the
    platform's timeline; waits for the first request; stopped at teardown."""
    from faultdrill.experiments.observe.load import LoadGenerator

    started: list[LoadGenerator] = []
    session = _session(request.config)
    workdir = session.test_dir(request.node)

    def start(users: int = 4, run_time: str | float = "120s") -> LoadGenerator:
        load = LoadGenerator(faultdrill_platform.service_url, faultdrill_platform.timeline,
                             workdir / f"load-{len(started)}", users=users, run_time=run_time,
                             owner=session.owner())  # fmt: skip
        started.append(load)
        load.start()
        if not load.wait_first_request(90):
            pytest.fail("the load generator sent no request within 90 s", pytrace=False)
        return load

    try:
        yield start
    finally:
        for load in started:
            load.stop()


@dataclass
class ActiveFault:
    """One fault injected by ``faultdrill_fault``; ``rollback()`` is idempotent (teardown calls it too)."""

    id: str
    fault: Any
    config: Any
    injection: Injection
    ctx: FaultContext
    timeline: Any
    rolled_back: bool = field(default=False)

    def verify(self) -> Verification:
        return self.fault.verify(self.injection, self.ctx)

    def rollback(self) -> None:
        if self.rolled_back:
            return
        self.rolled_back = True
        self.timeline.add("fault", self.id, event="end", fault=self.fault.name)
        self.fault.undo(self.injection, self.ctx)
        self.timeline.add("fault", self.id, event="rolled_back", fault=self.fault.name)


@pytest.fixture
def faultdrill_fault(
    request: pytest.FixtureRequest, faultdrill_platform: Platform
) -> Iterator[Callable[..., ActiveFault]]:
    """``faultdrill_fault(type, *, target=None, duration="60s", id=None, skip_unsupported=False, **params)``:
    inject a registered fault into the platform (preflight first); rolled back at teardown, newest first,
    also when the test errors or is interrupted. ``duration`` is the dead-man bound."""
    from faultdrill.faults.base import FaultContext
    from faultdrill.faults.deadman import spawn_watchdog
    from faultdrill.faults.errors import PreflightError
    from faultdrill.faults.registry import FaultRegistry

    session = _session(request.config)
    session.arm()
    registry = FaultRegistry.installed()
    active: list[ActiveFault] = []
    platform = faultdrill_platform

    def inject(fault_type: str, *, target: str | None = None, duration: str | float = "60s", id: str | None = None,
               skip_unsupported: bool = False, **params: Any) -> ActiveFault:  # fmt: skip
        fault = registry.get(fault_type)()
        config = fault.parse_config({**params, "duration_s": _seconds(duration),
                                     **({"target": target} if target is not None else {})})  # fmt: skip
        ctx = FaultContext.create(session.state_dir(), scope=platform.scope(), topology=platform.topology(),
                                  supervisor=platform)  # fmt: skip
        if problems := fault.preflight(config, ctx):
            error = PreflightError(problems, fault=fault_type)
            if skip_unsupported:
                pytest.skip(str(error))
            pytest.fail(str(error), pytrace=False)
        injection = fault.inject(config, ctx)
        handle = ActiveFault(id or fault_type, fault, config, injection, ctx, platform.timeline)
        active.append(handle)
        spawn_watchdog(ctx.state_dir, max_runtime_s=3600.0)
        platform.timeline.add("fault", handle.id, event="start", fault=fault_type, target=target or "",
                              mode=injection.mode, emulated=injection.emulated, injection=injection.id)  # fmt: skip
        return handle

    try:
        yield inject
    finally:
        errors = []
        for handle in reversed(active):
            try:
                handle.rollback()
            except Exception as exc:  # the others must still be undone; the ledger keeps this one
                errors.append(f"{handle.id}: {type(exc).__name__}: {exc}")
        if errors:
            pytest.fail("faultdrill: rollback failed (kept in the ledger; `faultdrill rollback --pending`): "
                        + "; ".join(errors), pytrace=False)  # fmt: skip
