"""The fault contract, exercised through the shipped FakeFault."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultdrill.faults.base import FaultContext, Injection, Scope
from faultdrill.faults.errors import BlastRadiusError, ConfigError, InjectionError
from faultdrill.faults.fake import FakeFault


@pytest.fixture
def ctx(tmp_path: Path) -> FaultContext:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    return FaultContext.create(tmp_path / "state", scope=Scope().with_paths(allowed))


def test_config_rejects_unknown_keys_with_suggestion(ctx: FaultContext) -> None:
    with pytest.raises(ConfigError) as info:
        FakeFault().parse_config({"path": "/x", "contnet": "y"}, file="exp.yaml")
    assert info.value.suggestion == "content"
    assert str(info.value) == (
        "exp.yaml: contnet: unknown key 'contnet' for fault 'fake' (did you mean 'content'?)"
    )


def test_config_type_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        FakeFault().parse_config({"path": "/x", "duration_s": -1})
    assert info.value.field == "duration_s"
    assert "greater than 0" in str(info.value)


def test_inject_verify_undo_restores_original(ctx: FaultContext) -> None:
    target = next(iter(ctx.scope.paths))
    path = Path(target) / "flag"
    path.write_text("original\n")
    fault = FakeFault()
    cfg = fault.parse_config({"path": str(path), "content": "broken\n", "duration_s": 5})
    assert fault.preflight(cfg, ctx) == []
    assert fault.plan(cfg, ctx) == [f"overwrite {path} with 7 bytes"]
    inj = fault.inject(cfg, ctx)
    assert path.read_text() == "broken\n"
    assert ctx.ledger.get(inj.id) == inj
    assert inj.deadline == pytest.approx(inj.created_at + 5 + ctx.grace_s)
    assert fault.verify(inj, ctx).effective
    fault.undo(inj, ctx)
    assert path.read_text() == "original\n"
    assert not fault.verify(inj, ctx).effective
    assert ctx.ledger.ids() == []
    fault.rollback(inj, ctx)  # idempotent
    assert path.read_text() == "original\n"


def test_rollback_of_new_file_removes_it(ctx: FaultContext) -> None:
    path = Path(next(iter(ctx.scope.paths))) / "new"
    fault = FakeFault()
    inj = fault.inject(fault.parse_config({"path": str(path)}), ctx)
    assert path.exists()
    fault.undo(inj, ctx)
    assert not path.exists()


def test_outside_scope_is_refused_before_anything_changes(
    ctx: FaultContext, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    fault = FakeFault()
    cfg = fault.parse_config({"path": str(outside)})
    assert [p.code for p in fault.preflight(cfg, ctx)] == ["blast_radius"]
    with pytest.raises(BlastRadiusError, match=r"outside\.txt"):
        fault.inject(cfg, ctx)
    escape = Path(next(iter(ctx.scope.paths))) / ".." / "outside.txt"
    with pytest.raises(BlastRadiusError):
        fault.inject(fault.parse_config({"path": str(escape)}), ctx)
    assert outside.read_text() == "keep"
    assert ctx.ledger.ids() == []


def test_dry_run_refuses_to_inject(ctx: FaultContext) -> None:
    ctx.dry_run = True
    path = Path(next(iter(ctx.scope.paths))) / "f"
    with pytest.raises(InjectionError, match="dry-run"):
        FakeFault().inject(FakeFault().parse_config({"path": str(path)}), ctx)
    assert not path.exists()


def test_failed_apply_is_undone_and_forgotten(ctx: FaultContext) -> None:
    path = Path(next(iter(ctx.scope.paths))) / "missing-dir" / "f"
    fault = FakeFault()
    with pytest.raises(InjectionError, match="fault 'fake'"):
        fault.inject(fault.parse_config({"path": str(path)}), ctx)
    assert ctx.ledger.ids() == []


def test_scope_checks() -> None:
    scope = Scope().with_pids(42).with_ports(8080).with_netns("fd-a").with_cgroups("/cg/fd")
    scope.check_pid(42)
    scope.check_port(8080)
    scope.check_netns("fd-a")
    scope.check_cgroup("/cg/fd/child")
    for check, arg in [
        (scope.check_pid, 1),
        (scope.check_port, 22),
        (scope.check_netns, "other"),
        (scope.check_cgroup, "/cg/other"),
        (scope.check_path, "/etc/passwd"),
    ]:
        with pytest.raises(BlastRadiusError):
            check(arg)  # type: ignore[operator]


def test_injection_is_frozen_and_json_round_trips() -> None:
    inj = Injection(
        id="ab12", fault="fake", mode="m", target="t", undo={"a": [1]},
        created_at=1.0, deadline=2.0, owner_pid=3,
    )
    assert Injection.model_validate_json(inj.model_dump_json()) == inj
    with pytest.raises(ValueError):
        inj.id = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        Injection.model_validate({**inj.model_dump(), "id": "../etc"})
