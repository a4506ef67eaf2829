"""The detection score's arithmetic on journals built here: caught on damage, switch only, missed, halted,
baseline failed, the rate, the gaps, the threshold, and the files (score.json, score.md, the terminal table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from faultdrill.experiments.expect import KINDS
from faultdrill.experiments.journal import Journal
from faultdrill.experiments.journal.file import collect_environment
from faultdrill.experiments.score.matrix import (
    Baseline,
    Cell,
    ScoreResult,
    VariantRow,
    catches_of,
    judge_journal,
    summarize,
)
from faultdrill.experiments.score.render import print_score
from faultdrill.experiments.score.runner import write_score
from faultdrill.experiments.spec.loader import load_experiment

ROOT = Path(__file__).resolve().parents[3]
EXPECT = [
    {"probe": "readiness", "replica": "replica-1", "holds": False, "during": "bad", "between": None},
    {"slo": "availability", "at_least": 0.99, "during": "bad"},
    {"requests": "failed", "at_most": 0, "during": "bad"},
    {"breaker": "replica-0", "sequence": ["closed", "open"], "within": "5s", "after": "bad.start"},
]
NAMES = ["readiness of replica-1 holds false during bad", "availability at least 0.99 during bad",
         "at most 0 failed requests during bad", "breaker of replica-0 goes closed → open"]  # fmt: skip


def journal(failed: set[int] = frozenset(), *, outcome: str = "failed", reason: str = "", evaluated: bool = True,
            extra: list[dict[str, Any]] | None = None) -> Journal:  # fmt: skip
    j = Journal.new({"metadata": {"name": "model-load-failure"}, "expect": EXPECT},
                    collect_environment(device="cpu", emulated=True))  # fmt: skip
    j.verdicts = [{"name": n, "passed": i not in failed and evaluated, "expected": n, "evaluated": evaluated,
                   "observed": f"observed {i}" if i in failed else "held"} for i, n in enumerate(NAMES)]
    j.verdicts += extra or []
    j.outcome, j.reason = outcome, reason  # type: ignore[assignment]
    return j


def test_every_kind_says_damage_or_mechanism():
    table = {k.tag: k.catches for k in KINDS}
    assert set(table.values()) <= {"damage", "mechanism"}
    damage = {"slo", "recovers", "restarts", "requests", "error_budget", "alert", "no_alerts", "runbook"}
    mechanism = {"probe_becomes", "probe_holds", "breaker", "canary", "counter"}
    assert {t: table[t] for t in damage | mechanism} == {t: "damage" if t in damage else "mechanism"
                                                          for t in damage | mechanism}  # fmt: skip


def test_kind_of_a_journal_expectation_matches_the_spec_model():
    from faultdrill.experiments.expect import kind_of

    spec = load_experiment(ROOT / "experiments" / "catalog" / "smoke.yaml")
    dumped = spec.model_dump(mode="json", by_alias=True)["expect"]
    for model, mapping in zip(spec.expect, dumped, strict=True):
        kind = kind_of(model)
        assert kind is not None and catches_of(mapping) == (kind.tag, kind.catches)


def test_damage_failure_is_a_catch_with_its_why():
    judged = judge_journal(journal({0, 2}))
    assert judged.outcome == "caught"
    assert [(f.kind, f.catches) for f in judged.failures] == [("probe_holds", "mechanism"), ("requests", "damage")]
    assert judged.damage()[0].observed == "observed 2"


def test_only_mechanism_failures_are_switch_only():
    judged = judge_journal(journal({0, 3}))
    assert judged.outcome == "switch_only" and not judged.damage()


def test_a_page_that_did_not_come_is_damage_unless_another_alert_paged_instead():
    alert = {"alert": "InferenceCircuitBreakerOpen", "fires": {"within": "8s", "after": "part.start"}}
    assert catches_of(alert, {"fired_s": None, "others_fired": 0}) == ("alert", "damage")  # nobody heard of it
    assert catches_of(alert, {"fired_s": 9.5}) == ("alert", "damage")  # late
    assert catches_of(alert, {"fired_s": None, "others_fired": 2}) == ("alert", "mechanism")  # paged all the same
    assert catches_of(alert, {"resolved_s": None, "never_fired": 1}) == ("alert", "mechanism")  # follows its fires
    j = Journal.new({"metadata": {"name": "network-partition"}, "expect": [alert]},
                    collect_environment(device="cpu", emulated=True))  # fmt: skip
    j.verdicts = [{"name": "alert InferenceCircuitBreakerOpen fires", "passed": False, "observed": "never fired",
                   "measured": {"fired_s": None, "others_fired": 2}}]  # fmt: skip
    j.outcome = "failed"
    assert judge_journal(j).outcome == "switch_only"


def test_all_held_is_missed_and_aborted_is_halted():
    assert judge_journal(journal(outcome="passed")).outcome == "missed"
    halted = judge_journal(journal(outcome="halted", reason="steady state not reached", evaluated=False))
    assert halted.outcome == "halted" and "steady state" in halted.reason and not halted.failures


def test_halt_if_stop_is_damage_and_ctk_steps_are_mechanism():
    halted = judge_journal(journal(outcome="halted", reason="halt_if availability: 0.31 < 0.5 for 5 s"))
    assert halted.outcome == "caught" and halted.failures[-1].kind == "halt_if"
    ctk = judge_journal(journal(extra=[{"name": "ctk: steady", "passed": False, "observed": "probe failed"}]))
    assert ctk.outcome == "switch_only" and ctk.failures[0].kind == "chaostoolkit"


def _result(cells: list[tuple[str, str, str]], *, baselines: dict[str, str], threshold: float = 100.0,
            complete: bool = True) -> ScoreResult:  # fmt: skip
    variants = list(dict.fromkeys(v for v, _, _ in cells))
    return summarize(ScoreResult(
        name="t", started_at=0.0, threshold=threshold, experiments=list(baselines), complete=complete,
        baselines=[Baseline(outcome=o, experiment=e, file=f"{e}.yaml") for e, o in baselines.items()],  # type: ignore[arg-type]
        variants=[VariantRow(name=v) for v in variants],
        cells=[Cell(outcome=o, variant=v, experiment=e, failures=judge_journal(  # type: ignore[arg-type]
            journal({2} if o == "caught" else {0} if o == "switch_only" else set())).failures)
            for v, e, o in cells],
    ))  # fmt: skip


def test_rate_gaps_switch_only_and_threshold():
    r = _result([("a", "x", "caught"), ("a", "y", "missed"), ("b", "x", "switch_only"), ("b", "y", "missed"),
                 ("c", "x", "missed"), ("c", "y", "missed")], baselines={"x": "missed", "y": "missed"})  # fmt: skip
    assert r.caught == 1 and round(r.detection_rate or 0) == 33
    assert r.gaps == ["b", "c"] and r.switch_only == ["b"]
    assert r.variants[0].caught_by == ["x"] and r.variants[1].switch_only_by == ["x"]
    assert r.exit_code() == 1
    assert r.model_copy(update={"threshold": 30.0}).exit_code() == 0
    assert r.model_copy(update={"complete": False}).exit_code() == 3


def test_an_experiment_that_failed_its_baseline_catches_nothing():
    r = _result([("a", "x", "caught"), ("a", "y", "missed")], baselines={"x": "caught", "y": "missed"})
    assert r.caught == 0 and r.gaps == ["a"] and r.detection_rate == 0.0
    r = _result([("a", "x", "caught")], baselines={"x": "switch_only"})
    assert r.caught == 0 and any("no experiment passed its baseline" in n for n in r.notes)
    assert summarize(r).notes == r.notes  # summarising again adds nothing


def test_files_and_table(tmp_path):
    r = _result([("ready", "x", "caught"), ("breaker", "x", "switch_only")], baselines={"x": "missed"},
                threshold=50)  # fmt: skip
    json_path, md_path = write_score(r, tmp_path / "fresh" / "dir")
    again = ScoreResult.model_validate(json.loads(json_path.read_text()))
    assert again == r and again.cell("ready", "x").failures[-1].observed == "observed 2"  # type: ignore[union-attr]
    md = md_path.read_text()
    assert ("| **ready** (caught) | ✔ caught<br>by requests: at most 0 failed requests during bad<br>why: observed 2"
            in md)
    assert "gaps (no experiment catches them on damage): breaker (switch only)" in md
    console = Console(record=True, width=200)
    print_score(console, r)
    text = console.export_text()
    assert "✔ caught" in text and "◐ switch only" in text and "GAP" in text
    assert "detection score: 1/2 variants caught on damage (50%); threshold 50%: at or above" in text
