"""Example traces for the journal: the slowest and the failed requests of each window.

After a run the services' span files (JSON lines, one per replica and one for the feature
store, written by ``target_service.traceexport``) stay in the run directory as artifacts;
this module reads them, assembles traces (spans grouped by trace id, parents resolved across
processes through the propagated ``traceparent``) and keeps, per window — steady state before
the first fault, then each fault from its start to its end —

* a few figures: traced requests, failed ones, p50/p95 of the request spans' durations;
* the slowest ``n`` successful traces and the ``n`` slowest failed ones (5xx: status ERROR),
  each as a bounded span tree (name, service, start offset, duration, status, key attributes,
  events) that reports draw as a waterfall.

Two passes over the files keep memory flat however long the run was: the first parses only
the request (root SERVER) spans, the second only the lines of the chosen traces (the trace id
sits at a fixed offset of each line, so other lines are skipped unparsed).

Example::

    summary = collect_traces(run_dir / "platform" / "traces", timeline, run_dir=run_dir)
    journal.traces = summary
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from faultdrill.experiments.expect.stats import percentile
from faultdrill.experiments.journal.models import ExampleTrace, SpanEvent, SpanNode, TraceSummary, TraceWindow
from faultdrill.experiments.journal.timeline import Timeline

__all__ = ["ExampleTrace", "SpanNode", "TraceSummary", "TraceWindow", "collect_traces", "windows_of"]

EXAMPLES = 3
MAX_SPANS = 40
MAX_ATTRS = 10
MAX_TEXT = 200
ROOT_SERVICE = "faultdrill-target"
# Shown in the span name or the same for every span of a request: left out of the tree.
_DROP = {"http.request.method", "http.route", "url.scheme", "url.template", "server.address", "server.port",
         "faultdrill.model", "faultdrill.dependency"}  # fmt: skip
_PREFIX = b'{"trace_id":"'


def windows_of(timeline: Timeline) -> list[tuple[str, str, float, float]]:
    """(id, label, start, end): steady state until the first fault, then each fault's window."""
    end_of_run = timeline.end
    steady = next((e.t for e in timeline.select("phase") if e.attrs.get("phase") == "steady"), None)
    teardown = next((e.t for e in timeline.select("phase") if e.attrs.get("phase") == "teardown"), end_of_run)
    faults: dict[str, dict[str, Any]] = {}
    for e in timeline.select("fault"):
        info = faults.setdefault(e.source, {})
        if e.attrs.get("event") == "start" and "start" not in info:
            info.update(start=e.t, type=e.attrs.get("fault", "?"), target=e.attrs.get("target", "?"))
        elif e.attrs.get("event") == "end" and "end" not in info:
            info["end"] = e.t
    out = []
    first = min((f["start"] for f in faults.values() if "start" in f), default=teardown)
    if steady is not None and first > steady:
        out.append(("steady", "steady state (before the first fault)", steady, first))
    for fid, f in faults.items():
        if "start" in f:
            out.append((fid, f"fault {fid} ({f['type']} on {f['target']})", f["start"], f.get("end", teardown)))
    return out


def _lines(files: Iterable[Path]) -> Iterator[bytes]:
    for path in files:
        with open(path, "rb") as fh:
            yield from fh


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None  # a torn last line of a killed process
    return doc if isinstance(doc, dict) and "trace_id" in doc else None


def _is_root(doc: dict[str, Any]) -> bool:
    return doc.get("kind") == "SERVER" and doc.get("service") == ROOT_SERVICE and (
        doc.get("parent_id") is None or bool(doc.get("remote_parent")))  # fmt: skip


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    if isinstance(value, list):
        return [_short(v) for v in value[:8]]
    return value


def _tree(root: dict[str, Any], spans: list[dict[str, Any]], t0_ns: int) -> tuple[list[SpanNode], int]:
    """Spans of one trace in depth-first order under ``root``; spans whose parent is missing hang at depth 1."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    ids = {s["span_id"] for s in spans}
    for s in spans:
        if s is root:
            continue
        parent = s.get("parent_id") if s.get("parent_id") in ids else root["span_id"]
        children.setdefault(parent, []).append(s)
    order: list[tuple[dict[str, Any], int]] = []
    stack = [(root, 0)]
    while stack:
        span, depth = stack.pop()
        order.append((span, depth))
        kids = sorted(children.get(span["span_id"], []), key=lambda s: s.get("start_ns") or 0, reverse=True)
        stack += [(k, depth + 1) for k in kids]
    nodes = []
    for s, depth in order[:MAX_SPANS]:
        start, end = int(s.get("start_ns") or t0_ns), int(s.get("end_ns") or s.get("start_ns") or t0_ns)
        attrs = {k: _short(v) for k, v in (s.get("attributes") or {}).items() if k not in _DROP}
        nodes.append(SpanNode(
            name=str(s.get("name")), service=str(s.get("service") or "?"), instance=s.get("instance"),
            kind=str(s.get("kind") or "INTERNAL"), depth=depth, start_ms=round((start - t0_ns) / 1e6, 3),
            duration_ms=round((end - start) / 1e6, 3), status=s.get("status") or "UNSET",
            status_message=_short(s.get("status_message")), attributes=dict(list(attrs.items())[:MAX_ATTRS]),
            events=[SpanEvent(name=str(e.get("name")), at_ms=round((int(e.get("t_ns") or start) - t0_ns) / 1e6, 3),
                              attributes={k: _short(v) for k, v in (e.get("attributes") or {}).items()})
                    for e in (s.get("events") or [])[:8]],
        ))  # fmt: skip
    return nodes, max(0, len(order) - MAX_SPANS)


def _example(root: dict[str, Any], spans: list[dict[str, Any]], start_wall: float) -> ExampleTrace:
    t0 = int(root["start_ns"])
    nodes, cut = _tree(root, spans, t0)
    attrs = root.get("attributes") or {}
    code = attrs.get("http.response.status_code")
    return ExampleTrace(
        trace_id=root["trace_id"], t=round(t0 / 1e9 - start_wall, 3),
        duration_ms=round((int(root["end_ns"]) - t0) / 1e6, 3), failed=root.get("status") == "ERROR",
        http_status=code if isinstance(code, int) else None,
        replica=attrs.get("faultdrill.replica") or root.get("instance"),
        services=sorted({n.service for n in nodes}), spans=nodes, truncated=cut,
    )  # fmt: skip


def collect_traces(trace_dir: Path, timeline: Timeline, *, run_dir: Path | None = None,
                   examples: int = EXAMPLES) -> TraceSummary:  # fmt: skip
    """The journal's trace summary from the span files in ``trace_dir`` (see the module doc).

    Never raises for missing or damaged files: the summary's ``note`` says what was found.
    """
    files = sorted(trace_dir.glob("*.jsonl")) if trace_dir.is_dir() else []
    rel = [str(f.relative_to(run_dir)) if run_dir and f.is_relative_to(run_dir) else str(f) for f in files]
    if not files:
        return TraceSummary(note=f"no span files in {trace_dir} (tracing off)")
    start_wall = timeline.start_wall
    windows = windows_of(timeline)
    roots: list[tuple[float, int, bool, str]] = []  # (run time, duration ns, failed, trace id)
    for line in _lines(files):
        if b'"SERVER"' not in line or ROOT_SERVICE.encode() not in line:
            continue
        doc = _parse(line)
        if doc is None or not _is_root(doc) or not doc.get("end_ns"):
            continue
        began = int(doc["start_ns"])
        roots.append((began / 1e9 - start_wall, int(doc["end_ns"]) - began, doc.get("status") == "ERROR",
                      doc["trace_id"]))  # fmt: skip
    chosen: dict[str, tuple[list[int], list[int]]] = {}
    stats = []
    for i, (_wid, _label, start, end) in enumerate(windows):
        inside = [r for r in roots if start <= r[0] < end]  # half-open: a request belongs to one window
        durations = sorted(r[1] / 1e6 for r in inside)
        ok = sorted((r for r in inside if not r[2]), key=lambda r: -r[1])[:examples]
        bad = sorted((r for r in inside if r[2]), key=lambda r: -r[1])[:examples]
        stats.append((len(inside), sum(r[2] for r in inside), durations))
        for kind, picked in ((0, ok), (1, bad)):
            for r in picked:
                chosen.setdefault(r[3], ([], []))[kind].append(i)
    spans: dict[str, list[dict[str, Any]]] = {tid: [] for tid in chosen}
    wanted = {tid.encode() for tid in chosen}
    for line in _lines(files):
        if line[len(_PREFIX):len(_PREFIX) + 32] in wanted and (doc := _parse(line)) is not None:
            spans[doc["trace_id"]].append(doc)
    out = [TraceWindow(id=wid, label=label, start=round(start, 3), end=round(end, 3), requests=n, failed=nf,
                       p50_ms=percentile(d, 0.5), p95_ms=percentile(d, 0.95))
           for (wid, label, start, end), (n, nf, d) in zip(windows, stats, strict=True)]  # fmt: skip
    for tid, (slow_in, failed_in) in chosen.items():
        root = next((s for s in spans[tid] if _is_root(s)), None)
        if root is None:
            continue
        example = _example(root, spans[tid], start_wall)
        for i in slow_in:
            out[i].slowest.append(example)
        for i in failed_in:
            out[i].failures.append(example)
    for w in out:
        w.slowest.sort(key=lambda x: -x.duration_ms)
        w.failures.sort(key=lambda x: -x.duration_ms)
    return TraceSummary(files=rel, spans=len(roots), windows=out)
