"""What an expectation kind is: its model and everything the engine asks of it, in one value.

Each module of ``experiments.expect`` ends with one ``Kind`` per model it defines; the table in
``experiments/expect/__init__.py`` lists them. The spec's reference checks, the run's settle time
and the loader's alert-name check ask a kind through these fields, never by class name.

Example::

    >>> Ref("replica", ("replica",), "replica-0").to
    'replica'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from pydantic import BaseModel

from faultdrill.experiments.expect.stats import Finding, SteadyCriteria
from faultdrill.experiments.journal.timeline import Timeline

__all__ = ["Catches", "Kind", "Path", "Ref", "RefTo"]

M = TypeVar("M", bound=BaseModel)

Path = tuple[str | int, ...]
"""A path into one expectation's mapping (``("fires", "after")``, ``("clients", 0)``)."""

Catches = Literal["damage", "mechanism"]
"""What a failed expectation of a kind shows (``faultdrill score``, ``docs/score.md``): ``damage`` — what users and
SREs feel (requests failed or slow, steady state not regained, a page that never came or came wrongly, a restart);
``mechanism`` — a resilience switch's internals (a probe, a breaker, a counter, the canary controller) did not move
as designed, which may or may not have hurt anyone."""

RefTo = Literal["fault", "moment", "runbook", "canary", "client", "replica", "supervised"]
"""What a reference must name: ``fault`` a fault id; ``moment`` a fault id, ``run`` or ``steady``;
``runbook`` a fault with a runbook attached; ``canary`` nothing, but the target must have a canary;
``client`` a ``load.clients`` id; ``replica`` a replica; ``supervised`` a service the platform supervises."""


class Ref(NamedTuple):
    """One name an expectation gives that must exist in the spec (checked by ``Experiment.reference_problems``)."""

    to: RefTo
    path: Path
    """Where it stands in the expectation."""
    name: str = ""


@dataclass(frozen=True)
class Kind(Generic[M]):
    """One expectation kind: ``{key: …}`` parsed as ``model``, named by ``describe``, judged by ``judge``."""

    key: str
    """The key an expectation of this kind starts with (the loader's did-you-mean draws from it)."""
    model: type[M]
    tag: str
    """Its tag in the ``Expectation`` union (the key, unless two kinds share one)."""
    describe: Callable[[M], str]
    """A readable one-line name (the JUnit test name)."""
    judge: Callable[[M, Timeline, SteadyCriteria], Finding]
    """Its judgement of a timeline; raises ``windows.Missing`` when a moment it needs never happened."""
    claims: Callable[[Mapping[str, Any]], bool] | None = None
    """Whether a spec mapping is of this kind; None: it holds ``key``. The first kind of the table that
    claims a mapping parses it."""
    references: Callable[[M], Iterable[Ref]] | None = None
    """The fault ids, moments, clients and services it names."""
    needed_after_end: Callable[[M, Mapping[str, float]], float] | None = None
    """Seconds after its fault ends it may still need events, given each fault's duration; None: none."""
    alerts: Callable[[M], Iterable[tuple[Path, str]]] | None = None
    """The alert names it gives; not None for the kinds that need Prometheus and Alertmanager."""
    judged_on_steady_state: bool = False
    """Its verdict's ``expected`` names the steady-state criteria it is judged against."""
    catches: Catches = field(kw_only=True)
    """Whether its failure is damage or only a mechanism's (``Catches``); every kind must say."""
    catches_when: Callable[[Mapping[str, float | int | None]], Catches] | None = field(default=None, kw_only=True)
    """For a kind whose failures differ: one failed verdict's classification from its ``measured`` values (the
    alert kind: a page that did not come while other alerts fired is the alerting's mechanism, not damage)."""

    def claimed(self, mapping: Mapping[str, Any]) -> bool:
        return self.claims(mapping) if self.claims is not None else self.key in mapping
