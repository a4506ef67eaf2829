"""Restart policy and CrashLoopBackOff, as a kubelet applies them, and exit reasons.

**Time scale.** The n-th consecutive crash waits ``initial_s * factor**n`` before the
restart, capped at ``max_s``; a process that ran ``reset_after_s`` before exiting starts
the count over. Kubernetes waits 10 s doubling to 300 s and resets after 10 minutes
(:meth:`BackOff.kubernetes`); the default here is **1 s doubling to 8 s, reset after 10 s**
(initial delay a tenth of Kubernetes', cap and reset scaled so that a crash loop reaches its
cap, and recovers from it, within one CI run).

Example::

    >>> [BackOff().delay(n) for n in range(5)]
    [1.0, 2.0, 4.0, 8.0, 8.0]
    >>> exit_reason(-9, oom_killed=True)
    (137, 9, 'OOMKilled')
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Literal

__all__ = ["BackOff", "RestartPolicy", "exit_reason", "restarts_after"]

RestartPolicy = Literal["Always", "OnFailure", "Never"]


@dataclass(frozen=True)
class BackOff:
    """CrashLoopBackOff timing (CI scale by default; see the module docstring)."""

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 8.0
    reset_after_s: float = 10.0

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.factor < 1 or self.max_s < self.initial_s or self.reset_after_s < 0:
            raise ValueError("back-off needs 0 <= initial_s <= max_s, factor >= 1, reset_after_s >= 0")

    @classmethod
    def kubernetes(cls) -> BackOff:
        return cls(initial_s=10.0, factor=2.0, max_s=300.0, reset_after_s=600.0)

    def delay(self, crashes: int) -> float:
        """Wait before the restart that follows ``crashes`` earlier consecutive crashes."""
        return float(min(self.max_s, self.initial_s * self.factor ** max(0, crashes)))


def restarts_after(policy: RestartPolicy, code: int) -> bool:
    """Whether ``policy`` restarts a process that ended with shell exit ``code``."""
    return policy == "Always" or (policy == "OnFailure" and code != 0)


def exit_reason(returncode: int, *, oom_killed: bool = False, cause: str | None = None) -> tuple[int, int | None, str]:
    """``(code, signal, reason)`` of a ``Popen.returncode`` (negative: killed by that signal).

    ``cause`` ``liveness``/``startup`` (the platform killed it for a failing probe) is an
    ``Error``, as Kubernetes reports a container killed for its liveness probe.
    """
    sig = -returncode if returncode < 0 else None
    code = 128 + sig if sig is not None else returncode
    if sig == signal.SIGKILL and oom_killed:
        return code, sig, "OOMKilled"
    if cause in ("liveness", "startup") or (sig is None and code != 0):
        return code, sig, "Error"
    return code, sig, "Signal" if sig is not None else "Completed"
