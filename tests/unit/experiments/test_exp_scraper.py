"""MetricsScraper against a real target process, a dead URL, and the text parser."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from faultdrill.experiments.host.process import ServiceProcess, free_port
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.observe.observers import Observer, ObserverContext
from faultdrill.experiments.observe.scraper import DEFAULT_METRICS, MetricsScraper, parse_samples
from faultdrill.faults.topology import ServiceHandle, Topology

INFER_BODY = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.25] * 64}]}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from faultdrill.target_service.registry import ModelRegistry

    registry = tmp_path_factory.mktemp("registry")
    ModelRegistry(registry).ensure_defaults()
    port = free_port()
    proc = ServiceProcess(
        "target", [sys.executable, "-m", "faultdrill.target_service", "serve"],
        env={"FAULTDRILL_PORT": str(port), "FAULTDRILL_MODEL_REGISTRY": str(registry)},
        log_path=tmp_path_factory.mktemp("log") / "target.log",
    )  # fmt: skip
    proc.start()
    try:
        base = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{base}/v2/models/digits", timeout_s=60)
        yield base
    finally:
        proc.stop()


def _topology(url: str) -> Topology:
    return Topology(services={"replica-0": ServiceHandle(name="replica-0", role="replica", url=url)})


def _metric_events(tl: Timeline, name: str) -> list[Event]:
    return [e for e in tl.select("metric", source="replica-0") if e.attrs["name"] == name]


def test_is_an_observer() -> None:
    scraper = MetricsScraper()
    assert isinstance(scraper, Observer)
    assert scraper.name == "metrics"
    assert scraper.metrics == DEFAULT_METRICS


def test_rejects_bad_periods() -> None:
    with pytest.raises(ValueError):
        MetricsScraper(period_s=0)
    with pytest.raises(ValueError):
        MetricsScraper(timeout_s=0)


def test_scrapes_selected_metrics_with_the_targets_numbers(target: str) -> None:
    with httpx.Client(timeout=10.0) as client:
        before = _requests_total(client.get(f"{target}/metrics").text)
        for _ in range(3):
            assert client.post(f"{target}/v2/models/digits/infer", json=INFER_BODY).status_code == 200
    tl = Timeline()
    ctx = ObserverContext(tl, topology=lambda: _topology(target))
    scraper = MetricsScraper(period_s=0.1)
    scraper.start(ctx)
    try:
        for _ in range(100):  # bounded: 5 s at most
            if scraper.scrapes >= 2:
                break
            time.sleep(0.05)
    finally:
        scraper.stop()
    assert scraper.scrapes >= 2
    events = tl.select("metric")
    assert events and {e.source for e in events} == {"replica-0"}
    names = {e.attrs["name"] for e in events}
    assert names <= set(DEFAULT_METRICS)
    for expected in ("inference_requests_total", "inference_pending_requests", "process_resident_memory_bytes",
                     "gpu_memory_total_bytes", "gpu_memory_used_bytes", "inference_ready"):  # fmt: skip
        assert expected in names, f"{expected} missing from {sorted(names)}"
    assert all(isinstance(e.attrs["value"], float) and isinstance(e.attrs["labels"], dict) for e in events)
    # The counter went up by exactly the three requests sent (nothing else infers here).
    first_tick = min(e.t for e in events)
    ok = [e for e in _metric_events(tl, "inference_requests_total") if e.t == first_tick]
    assert sum(e.attrs["value"] for e in ok) == before + 3
    assert all(e.attrs["labels"].get("model") == "digits" for e in ok)
    rss = _metric_events(tl, "process_resident_memory_bytes")
    assert rss and rss[0].attrs["value"] > 10 * 2**20
    assert all(e.attrs["value"] == 0.0 for e in _metric_events(tl, "inference_pending_requests"))
    assert _metric_events(tl, "gpu_memory_total_bytes")[0].attrs["value"] > 0
    # One scrape is one instant: its samples share t; and no _created companions leak in.
    assert len({e.t for e in events}) == scraper.scrapes
    assert not any(e.attrs["name"].endswith("_created") for e in events)


def test_custom_selection_only_records_what_was_asked(target: str) -> None:
    tl = Timeline()
    scraper = MetricsScraper(period_s=10.0, metrics=["inference_ready"])
    scraper.start(ObserverContext(tl, topology=lambda: _topology(target)))
    try:
        assert scraper.scrape_once(ObserverContext(tl, topology=lambda: _topology(target))) >= 1
    finally:
        scraper.stop()
    assert {e.attrs["name"] for e in tl.select("metric")} == {"inference_ready"}
    assert {e.attrs["value"] for e in tl.select("metric")} <= {0.0, 1.0}


def test_dead_url_yields_no_events_and_no_exception() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    tl = Timeline()
    ctx = ObserverContext(tl, topology=lambda: _topology(dead))
    scraper = MetricsScraper(period_s=0.05, timeout_s=0.2)
    scraper.start(ctx)
    try:
        assert scraper.scrape_once(ctx) == 0
        time.sleep(0.3)
    finally:
        scraper.stop()
    assert len(tl) == 0
    assert scraper.scrapes == 0
    assert scraper._poller.errors == 0  # skipped, not failed
    assert scraper._poller.ticks >= 2


def test_stop_without_start_and_twice_is_harmless() -> None:
    scraper = MetricsScraper()
    scraper.stop()
    scraper.stop()
    assert scraper.scrape_once(ObserverContext(Timeline())) == 0


def test_parse_samples_selects_by_sample_name() -> None:
    text = (
        "# TYPE inference_requests counter\n"
        'inference_requests_total{model="digits",code="200"} 7.0\n'
        'inference_requests_created{model="digits",code="200"} 1.7e9\n'
        "# TYPE inference_ready gauge\n"
        "inference_ready 1.0\n"
        "# TYPE other gauge\n"
        "other 3\n"
    )
    assert parse_samples(text, ["inference_requests_total", "inference_ready"]) == [
        ("inference_requests_total", 7.0, {"model": "digits", "code": "200"}),
        ("inference_ready", 1.0, {}),
    ]


def _requests_total(text: str) -> float:
    return sum(v for _, v, _ in parse_samples(text, ["inference_requests_total"]))
