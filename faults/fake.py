"""``FakeFault``: a real, shipped test double that overwrites a file and restores it.

It follows the whole contract (scope check, durable ledger record before the write,
idempotent rollback, measured verify), so engine and crash-safety tests exercise the
same paths as real faults without needing root.

Example::

    ctx = FaultContext.create(state_dir, scope=Scope().with_paths(tmp_path))
    fault = FakeFault()
    cfg = fault.parse_config({"path": str(tmp_path / "flag"), "content": "broken\\n"})
    inj = fault.inject(cfg, ctx)          # flag now says "broken"
    fault.undo(inj, ctx)                  # original content (or absence) restored
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import ClassVar

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification

__all__ = ["FakeFault"]


class FakeFault(Fault):
    """Overwrite an allow-listed file with ``content``; rollback restores it exactly."""

    class Config(FaultConfig):
        path: str
        content: str = "faultdrill\n"

    name: ClassVar[str] = "fake"
    modes: ClassVar[tuple[str, ...]] = ("overwrite",)

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        problems = []
        path = Path(config.path)
        try:
            ctx.scope.check_path(path)
        except Exception as exc:
            problems.append(Problem("blast_radius", str(exc), "allow-list the file's directory"))
        if not path.parent.is_dir():
            problems.append(Problem("no_parent", f"directory {path.parent} does not exist"))
        return problems

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        return [f"overwrite {config.path} with {len(config.content.encode())} bytes"]

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        path = Path(config.path)
        ctx.scope.check_path(path)
        original = path.read_bytes() if path.exists() else None
        undo = {
            "path": str(path),
            "existed": original is not None,
            "content_b64": base64.b64encode(original or b"").decode(),
            "injected_sha256": hashlib.sha256(config.content.encode()).hexdigest(),
        }
        injection = self.new_injection(config, ctx, mode="overwrite", target=str(path), undo=undo)
        return self.apply_recorded(
            injection, ctx, lambda: _write_atomic(path, config.content.encode())
        )

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        path = Path(injection.undo["path"])
        if injection.undo["existed"]:
            original = base64.b64decode(injection.undo["content_b64"])
            if not path.exists() or path.read_bytes() != original:
                _write_atomic(path, original)
        else:
            path.unlink(missing_ok=True)

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        path = Path(injection.undo["path"])
        actual = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        effective = actual == injection.undo["injected_sha256"]
        return Verification(
            effective=effective,
            details={"sha256": actual, "expected_sha256": injection.undo["injected_sha256"]},
            message=f"{path} {'holds' if effective else 'does not hold'} the injected content",
        )


def _write_atomic(path: Path, data: bytes) -> None:
    # Readers of the target must see old or new content, never a torn file.
    tmp = path.with_name(f".{path.name}.fd-tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
