"""The one error hierarchy of faultdrill.

Every error the project raises on purpose is one of these, so callers can catch
``FaultdrillError`` and map it to an exit code (2 for bad input, 3 for aborted)::

    FaultdrillError                 base; ``str(err)`` is the full, user-facing message
    ├── ConfigError                 bad experiment/fault config: file:line:col, field, suggestion
    ├── PluginError                 duplicate fault name, plugin that fails to load, unknown name
    ├── PreflightError              capability problems found before anything is touched
    ├── BlastRadiusError            target outside what faultdrill started or was allowed
    ├── InjectionError              a fault could not be applied (it was undone again)
    ├── RollbackError               a fault could not be undone
    └── LedgerError                 the crash-safe ledger is unreadable or unwritable

Example::

    >>> err = ConfigError("unknown key 'durtion'", file="exp.yaml", line=12, column=5,
    ...                   field="faults[0].durtion", suggestion="duration")
    >>> str(err)
    "exp.yaml:12:5: faults[0].durtion: unknown key 'durtion' (did you mean 'duration'?)"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "BlastRadiusError",
    "ConfigError",
    "FaultdrillError",
    "InjectionError",
    "LedgerError",
    "PluginError",
    "PreflightError",
    "RollbackError",
]


class FaultdrillError(Exception):
    """Base of every error faultdrill raises on purpose.

    >>> isinstance(LedgerError("disk full"), FaultdrillError)
    True
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FaultdrillError):
    """A config value is wrong; says where (file:line:col), which field, and what would fit.

    >>> str(ConfigError("must be > 0", field="duration", expected="a positive duration"))
    'duration: must be > 0 (expected a positive duration)'
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
        expected: str | None = None,
        suggestion: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.expected = expected
        self.suggestion = suggestion

    def location(self) -> str:
        """``file:line:col`` with the parts that are known; empty string if none is."""
        parts = [str(p) for p in (self.file, self.line, self.column) if p is not None]
        return ":".join(parts)

    def __str__(self) -> str:
        text = self.message
        if self.expected:
            text += f" (expected {self.expected})"
        if self.suggestion:
            text += f" (did you mean '{self.suggestion}'?)"
        if self.field:
            text = f"{self.field}: {text}"
        where = self.location()
        return f"{where}: {text}" if where else text


class PluginError(FaultdrillError):
    """A fault plugin is broken, registered twice, or unknown.

    ``sources`` names where each conflicting definition came from (entry point, module).

    >>> str(PluginError("unknown fault 'cpu_hgo'", suggestion="cpu_hog"))
    "unknown fault 'cpu_hgo' (did you mean 'cpu_hog'?)"
    """

    def __init__(
        self,
        message: str,
        *,
        plugin: str | None = None,
        sources: Sequence[str] = (),
        suggestion: str | None = None,
    ) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.sources = tuple(sources)
        self.suggestion = suggestion

    def __str__(self) -> str:
        text = self.message
        if self.suggestion:
            text += f" (did you mean '{self.suggestion}'?)"
        return text


class _ProblemLike(Protocol):
    # Structural, so this module needs nothing from faults.base (which imports it).
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def hint(self) -> str: ...


class PreflightError(FaultdrillError):
    """Capability checks failed; lists every problem, each with its hint.

    >>> from faults.base import Problem
    >>> print(PreflightError([Problem("not_root", "needs root", "run with sudo")], fault="x"))
    fault 'x' cannot run here:
      - [not_root] needs root (hint: run with sudo)
    """

    def __init__(self, problems: Sequence[_ProblemLike], *, fault: str | None = None) -> None:
        self.problems = tuple(problems)
        self.fault = fault
        head = f"fault '{fault}' cannot run here:" if fault else "preflight failed:"
        lines = [head]
        for p in self.problems:
            line = f"  - [{p.code}] {p.message}"
            if p.hint:
                line += f" (hint: {p.hint})"
            lines.append(line)
        super().__init__("\n".join(lines))


class BlastRadiusError(FaultdrillError):
    """A fault tried to touch something faultdrill neither started nor was allowed to touch.

    >>> str(BlastRadiusError("pid", "1", allowed=["4242"]))
    "refused to touch pid '1': not started by faultdrill nor allow-listed (allowed: 4242)"
    """

    def __init__(self, kind: str, target: str, *, allowed: Sequence[str] = ()) -> None:
        self.kind = kind
        self.target = target
        self.allowed = tuple(allowed)
        shown = ", ".join(self.allowed) if self.allowed else "nothing"
        super().__init__(
            f"refused to touch {kind} '{target}': not started by faultdrill nor "
            f"allow-listed (allowed: {shown})"
        )


class _FaultScopedError(FaultdrillError):
    # Injection and rollback failures share context: which fault, which injection.
    def __init__(
        self, message: str, *, fault: str | None = None, injection_id: str | None = None
    ) -> None:
        prefix = ""
        if fault:
            prefix = f"fault '{fault}'"
            if injection_id:
                prefix += f" (injection {injection_id})"
            prefix += ": "
        super().__init__(prefix + message)
        self.fault = fault
        self.injection_id = injection_id


class InjectionError(_FaultScopedError):
    """A fault could not be applied; whatever part was applied has been undone."""


class RollbackError(_FaultScopedError):
    """A fault could not be undone; its ledger record is kept so it can be retried."""


class LedgerError(FaultdrillError):
    """The ledger could not be read or written; names the file."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
