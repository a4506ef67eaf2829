"""Correct answers are an SLI: the answer check (``target_service/answers.py``), known answers published with the
bundled model, ``wrong`` counted on each line → ``RequestsAttrs`` → ``Unit`` → ``{requests: wrong}``, and
``load.protocol: {kind: oip_v2, known_answers: {file: …}}`` validated with located errors."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from faultdrill.experiments.expect import Expectation
from faultdrill.experiments.expect.judge import evaluate
from faultdrill.experiments.expect.stats import request_stats
from faultdrill.experiments.journal.events import RequestsAttrs
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.journal.traffic import units
from faultdrill.experiments.observe.load import event_of_line
from faultdrill.experiments.observe.protocols import Outcome, client_of, prepare
from faultdrill.experiments.spec.load import OipV2Protocol
from faultdrill.faults.errors import ConfigError
from faultdrill.target_service.answers import KnownAnswerError, check_outputs, parse

ROOT = Path(__file__).resolve().parents[3]
_EXPECT: TypeAdapter[Any] = TypeAdapter(Expectation)
PROBS = [0.01, 0.01, 0.9, 0.01, 0.01, 0.01, 0.01, 0.02, 0.01, 0.01]
SET = {"format": "faultdrill.known_answers/1", "model": "digits", "version": "1", "tolerance": {"atol": 0.2},
       "answers": [{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 0.25]}],
                    "class": 2, "outputs": [{"name": "probabilities", "shape": [1, 10], "data": PROBS}]}]}  # fmt: skip


def _outputs(data: list[Any], shape: list[int] | None = None) -> list[dict[str, Any]]:
    return [{"name": "probabilities", "datatype": "FP32", "shape": shape or [1, 10], "data": data}]


# -- the answer check ---------------------------------------------------------------------
def test_a_good_answer_passes_plain_and_known() -> None:
    expected = parse(SET).answers[0]
    assert check_outputs(_outputs(PROBS), None, None) is None
    assert check_outputs(_outputs([p + 0.1 if i == 0 else p for i, p in enumerate(PROBS)]), None, expected) is None


def test_nan_infinity_and_null_are_wrong() -> None:
    assert check_outputs(_outputs([None] * 10), None, None) == \
        "output 'probabilities' holds None at element 0 (not a number)"  # fmt: skip
    assert check_outputs(_outputs([*PROBS[:3], float("nan"), *PROBS[4:]]), None, None) == \
        "output 'probabilities' holds nan at element 3 (not a finite number)"  # fmt: skip
    assert "inf at element 9" in str(check_outputs(_outputs([*PROBS[:9], float("inf")]), None, None))


def test_wrong_shapes_are_wrong() -> None:
    assert check_outputs(_outputs(PROBS, [1, 9]), None, None) == \
        "output 'probabilities' has 10 elements for shape [1, 9]"  # fmt: skip
    assert check_outputs(_outputs(PROBS, [10]), {"probabilities": (1, 10)}, None) == \
        "output 'probabilities' has shape [10], expected [1, 10]"  # fmt: skip
    assert check_outputs([], None, None) == "no outputs in the answer"
    expected = parse(SET).answers[0]
    assert check_outputs(_outputs(PROBS[:5], [1, 5]), None, expected) == \
        "output 'probabilities' has shape [1, 5], expected [1, 10]"  # fmt: skip


def test_a_known_row_of_another_class_or_off_its_values_is_wrong() -> None:
    expected = parse(SET).answers[0]
    swapped = [0.9 if i == 7 else 0.02 if i == 2 else p for i, p in enumerate(PROBS)]
    assert check_outputs(_outputs(swapped), None, expected) == \
        "class 7 (argmax of output 'probabilities'), expected 2"  # fmt: skip
    flat = [0.4 if i == 2 else 0.06 for i in range(10)]  # right class, far less confident
    assert check_outputs(_outputs(flat), None, expected) == "output 'probabilities'[2] is 0.4, expected 0.9 ± 0.2"


@pytest.mark.parametrize("mutate, located", [
    (lambda d: d.update(format="other/2"), "format: 'other/2': this faultdrill reads 'faultdrill.known_answers/1'"),
    (lambda d: d.update(answers=[]), "answers: is missing or empty"),
    (lambda d: d["answers"][0].pop("inputs"), "answers[0].inputs: is missing or empty"),
    (lambda d: d["answers"][0]["inputs"][0].update(datatype="FP33"),
     "answers[0].inputs[0].datatype: 'FP33' is not an OIP v2 datatype"),
    (lambda d: d["answers"][0]["inputs"][0].update(data=[1.0]),
     "answers[0].inputs[0].data: 1 elements do not fill shape [1, 2]"),
    (lambda d: d["answers"][0].update({"class": "two"}), "answers[0].class: 'two' is not a class index"),
    (lambda d: d["answers"][0]["outputs"][0]["data"].__setitem__(0, None),
     "answers[0].outputs[0].data: holds a value that is not a finite number"),
    (lambda d: (d["answers"][0].pop("class"), d["answers"][0].pop("outputs")),
     "answers[0]: expects nothing: give class, outputs or both"),
    (lambda d: d.update(tolerance={"atol": -1}), "tolerance.atol: -1 is not a number >= 0"),
    (lambda d: d["answers"][0].update(extra=1), "answers[0].extra: unknown field"),
])  # fmt: skip
def test_bad_known_answer_sets_are_located(mutate: Any, located: str) -> None:
    doc = copy.deepcopy(SET)
    mutate(doc)
    with pytest.raises(KnownAnswerError) as caught:
        parse(doc)
    assert str(caught.value).startswith(located)


# -- oip_v2 load.protocol with known answers ------------------------------------------------
def _oip(tmp_path: Path, content: Any) -> OipV2Protocol:
    (tmp_path / "ka.json").write_text(content if isinstance(content, str) else json.dumps(content))
    inputs = {"file": "in.json"}
    (tmp_path / "in.json").write_text(json.dumps({"inputs": SET["answers"][0]["inputs"]}))  # type: ignore[index]
    return OipV2Protocol.model_validate({"kind": "oip_v2", "model": "digits", "inputs": inputs,
                                         "known_answers": {"file": "ka.json"}})  # fmt: skip


def test_an_oip_v2_known_answer_file_is_located_when_wrong(tmp_path: Path) -> None:
    bad = copy.deepcopy(SET)
    bad["answers"][0]["inputs"][0]["datatype"] = "FP33"  # type: ignore[index]
    with pytest.raises(ConfigError) as caught:
        prepare(_oip(tmp_path, bad), tmp_path)
    assert str(caught.value).replace(str(tmp_path) + "/", "").startswith(
        "ka.json: answers[0].inputs[0].datatype: 'FP33' is not an OIP v2 datatype")
    with pytest.raises(ConfigError, match=r"ka.json:1:2: not JSON"):
        prepare(_oip(tmp_path, "{nope"), tmp_path)


def test_every_fourth_oip_v2_call_is_known_and_judged_by_it(tmp_path: Path) -> None:
    client = client_of(prepare(_oip(tmp_path, SET), tmp_path))
    calls = [client.call(i) for i in range(8)]
    assert [c.expected is not None for c in calls] == [True, False, False, False] * 2
    good = json.dumps({"outputs": _outputs(PROBS)}).encode()
    other = json.dumps({"outputs": _outputs([0.9 if i == 7 else 0.0 for i in range(10)])}).encode()
    assert client.judge_of(calls[0])(200, {}, good).ok
    assert client.judge_of(calls[0])(200, {}, other) == Outcome.wrong(
        "known answer: class 7 (argmax of output 'probabilities'), expected 2")
    assert client.judge_of(calls[1])(200, {}, other).ok  # not a known row: only its form is judged


# -- counted: the line, the journal, units, the expectation ------------------------------------
def _aggregate(rows: list[dict[str, Any]], tmp_path: Path) -> list[Event]:
    src, dst = tmp_path / "raw.jsonl", tmp_path / "buckets.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = "import sys; from target_service.loadkit import aggregate_file as a; print(a(sys.argv[1], sys.argv[2]))"
    subprocess.run([sys.executable, "-c", code, str(src), str(dst)], cwd=ROOT / "faultdrill", check=True,
                   capture_output=True, text=True, timeout=120)  # fmt: skip
    return [e for line in dst.read_text().splitlines() if (e := event_of_line(line, 0.0)) is not None]


def test_wrong_answers_are_counted_apart_from_lost_and_fail_availability(tmp_path: Path) -> None:
    rows = [{"t": 1.0 + i * 0.01, "ok": i % 5 != 0, "status": 0 if i == 5 else 200, "latency_s": 0.002,
             "name": "/v2/models/digits/infer",
             "error": None if i % 5 else "ConnectionResetError: reset" if i == 5 else "WrongAnswer: class 7"}
            for i in range(20)]  # fmt: skip
    events = _aggregate(rows, tmp_path)
    assert sum(e.attrs["wrong"] for e in events) == 3 and sum(e.attrs["lost"] for e in events) == 1
    assert all(RequestsAttrs.of(e).wrong == e.attrs["wrong"] for e in events)
    assert sum(u.wrong for u in units(events)) == 3
    stats = request_stats(events)
    assert (stats.total, stats.ok, stats.wrong, stats.lost, stats.availability) == (20, 16, 3, 1, 0.8)


def test_journals_before_wrong_read_zero_and_single_requests_are_read_by_their_error() -> None:
    old = Event(t=1.0, kind="requests", source="load", attrs={"count": 5, "ok": 4, "lost": 1})
    assert [(u.total, u.lost, u.wrong) for u in units([old])] == [(5, 1, 0)]
    one = Event(t=1.0, kind="request", source="load",
                attrs={"ok": False, "status": 200, "latency_s": 0.01, "error": "WrongAnswer: connection id NaN"})
    assert [(u.total, u.ok, u.lost, u.wrong) for u in units([one])] == [(1, 0, 0, 1)]


def _timeline() -> Timeline:
    tl = Timeline(start=0.0, clock=lambda: 0.0)
    tl.add("fault", "bad", t=2.0, event="start", fault="bad_canary", target="canary-0")
    tl.add("fault", "bad", t=8.0, event="end", fault="bad_canary", target="canary-0")
    for i in range(100):  # 10 s, 10 buckets a second of 10 requests: 2 wrong a bucket from 2 s to 5 s
        t = i * 0.1
        wrong = 2 if 2.0 <= t < 5.0 else 0
        sample = {"t": t, "ok": False, "status": 200, "error": "WrongAnswer: output 'probabilities' holds None"}
        tl.add("requests", "load", t=t, span_s=0.1, name="infer", count=10, ok=10 - wrong, lost=0, wrong=wrong,
               statuses={"200": 10}, samples=[sample] if wrong else [])
    return tl


def test_the_wrong_requests_expectation_counts_and_shares() -> None:
    tl = _timeline()
    count = evaluate(_EXPECT.validate_python({"requests": "wrong", "at_most": 10, "during": "bad"}), tl)
    assert not count.passed and count.observed == "60 of 610 requests wrong during bad (expected at most 10)"
    assert count.evidence and "WrongAnswer" in count.evidence[0]["attrs"]["error"]
    share = evaluate(_EXPECT.validate_python({"requests": "wrong", "at_most": "10%", "during": "bad"}), tl)
    assert share.passed and share.observed == "60 of 610 requests (9.84%) wrong during bad (expected at most 10%)"
    assert share.measured["share"] == pytest.approx(60 / 610)
    after = evaluate(_EXPECT.validate_python({"requests": "wrong", "at_most": "0.5%", "between": ["bad.start+3s",
                                                                                                 "bad.end"]}), tl)
    assert after.passed and after.measured["wrong"] == 0
    failed = evaluate(_EXPECT.validate_python({"requests": "failed", "at_most": 59, "during": "bad"}), tl)
    assert not failed.passed and failed.measured["failed"] == 60  # wrong answers are failures too


# -- the bundled load against a real replica ---------------------------------------------------
def test_the_bundled_load_checks_every_answer_against_a_real_replica(tmp_path: Path) -> None:
    from faultdrill.experiments.observe.load import LoadGenerator
    from faultdrill.experiments.platforms.local.stack import LocalStack
    from faultdrill.target_service.registry import ModelRegistry

    with LocalStack(tmp_path / "stack", replicas=1) as stack:
        url = stack.topology().get("replica-0").url
        assert url is not None and stack.model_registry is not None
        known = ModelRegistry(stack.model_registry).known_answers("digits", "1")
        assert known is not None
        tl = Timeline()
        gen = LoadGenerator(url, tl, tmp_path / "load", users=4, run_time="2s", known_answers=known)
        gen.start()
        assert gen.wait(timeout_s=90)
        summary = gen.stop()
        stats = request_stats(tl.select("requests", source="load"))
        assert stats.total == summary.requests > 100 and stats.ok == stats.total and stats.wrong == 0
        # The same load told other classes: every 4th request (the known ones) is a wrong answer, whatever its 200.
        doc = json.loads(known.read_text())
        for answer in doc["answers"]:
            answer["class"] = (answer["class"] + 1) % 10
        (tmp_path / "other.json").write_text(json.dumps(doc))
        tl = Timeline()
        gen = LoadGenerator(url, tl, tmp_path / "load2", users=4, run_time="2s", known_answers=tmp_path / "other.json")
        gen.start()
        assert gen.wait(timeout_s=90)
        gen.stop()
        events = tl.select("requests", source="load")
        stats = request_stats(events)
        assert stats.wrong == stats.failed and 0.2 < stats.wrong / stats.total < 0.3 and stats.lost == 0
        assert all(set(e.attrs["statuses"]) == {"200"} for e in events)
        assert all(f.attrs["error"].startswith("WrongAnswer: class ") for f in stats.failures)


def test_a_bad_known_answer_file_stops_the_load_before_it_starts(tmp_path: Path) -> None:
    from faultdrill.experiments.observe.load import LoadGenerator

    (tmp_path / "ka.json").write_text('{"answers": []}')
    with pytest.raises(ConfigError, match=r"known_answers: .*ka.json: answers: is missing or empty"):
        LoadGenerator("http://127.0.0.1:9", Timeline(), tmp_path, known_answers=tmp_path / "ka.json")


@pytest.mark.parametrize("known, located", [
    ("{path: ka.json}", "e.yaml:6:59: load.protocol.known_answers.path: unknown key 'path' (expected one of file)"),
    ("ka.json", "e.yaml:6:58: load.protocol.known_answers: expected a mapping, got a string"),
])  # fmt: skip
def test_a_spec_s_known_answers_field_is_located(known: str, located: str) -> None:
    from faultdrill.experiments.spec.loader import check_experiment_text

    spec = ("apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: protocols}\nload:\n  users: 2\n"
            f"  protocol: {{kind: oip_v2, model: digits, known_answers: {known}}}\nfaults: []\nexpect: []\n")
    assert located in [str(e) for e in check_experiment_text(spec, file="e.yaml")]
