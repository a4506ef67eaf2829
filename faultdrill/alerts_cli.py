"""``faultdrill alerts …``: the target's alert rules from the terminal — list them, check them.

``check`` runs exactly what CI runs on the shipped rules: ``promtool check rules``,
``promtool test rules`` over ``target_service/alerts/tests/*.yml`` and ``amtool check-config``,
plus the time-scaled copy a run would load (``--speedup``), so an edited rule is proven before a
game day uses it.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from faultdrill.output_cli import JsonOpt, emit_json, make_console, make_table, print_table, row

__all__ = ["AlertRule", "alerts_app"]

alerts_app = typer.Typer(help="The target's Prometheus alert rules: list, check.", no_args_is_help=True)

RulesOpt = Annotated[str, typer.Option("--rules", help="A rules file (default: the shipped rules).")]


RECEIVERS = {"critical": "pager", "warning": "chat", "ticket": "ticket"}
"""Severity → Alertmanager receiver, as target_service/alerts/alertmanager.yml routes them."""


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule of a rules file, as ``alerts list`` shows it."""

    alert: str
    group: str
    severity: str | None
    receiver: str | None
    """Where its severity routes (``None``: no severity, or one that is not routed)."""
    for_: str
    runbook_url: str | None
    summary: str | None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["for"] = doc.pop("for_")
        return {k: doc[k] for k in ("alert", "group", "severity", "receiver", "for", "runbook_url", "summary")}


def read_alert_rules(path: Path) -> list[AlertRule]:
    """Every alerting rule of ``path``, in file order (a missing or malformed file: a located ConfigError)."""
    from faultdrill.experiments.spec.rules import alert_rules, load_rules

    alert_rules(path)  # a missing or malformed file, or one over the input limits: a located ConfigError, exit 2
    doc = load_rules(path)
    out = []
    for group in doc["groups"]:
        if not isinstance(group, dict):
            continue
        rules = group.get("rules")
        for rule in rules if isinstance(rules, list) else []:
            if isinstance(rule, dict) and "alert" in rule:
                labels, annotations = rule.get("labels"), rule.get("annotations")
                labels = labels if isinstance(labels, dict) else {}
                annotations = annotations if isinstance(annotations, dict) else {}
                sev = str(labels["severity"]) if "severity" in labels else None
                out.append(AlertRule(alert=str(rule["alert"]), group=str(group.get("name", "")), severity=sev,
                                     receiver=RECEIVERS.get(sev or ""), for_=str(rule.get("for", "0s")),
                                     runbook_url=annotations.get("runbook_url"),
                                     summary=annotations.get("summary")))  # fmt: skip
    return out


@alerts_app.command("list")
def alerts_list(rules: RulesOpt = "default", as_json: JsonOpt = False) -> None:
    """Every alerting rule: name, severity (→ receiver), for, runbook."""
    from faultdrill.experiments.spec.rules import rules_path

    path = rules_path(rules, spec_file=None)
    found = read_alert_rules(path)
    if as_json:
        emit_json({"rules_file": str(path), "alerts": [r.to_json() for r in found]})
        return
    table = make_table("alert", "severity → receiver", "for", "runbook", keys={"alert"}, title=str(path))
    for r in found:
        row(table, r.alert, f"{r.severity or '-'} → {r.receiver or '?'}", r.for_, r.runbook_url)
    print_table(make_console(), table)


def _tool(argv: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        return False, f"{argv[0]} not found: run `make setup` (apt-get install prometheus prometheus-alertmanager)"
    return done.returncode == 0, (done.stdout + done.stderr).strip()


@dataclass(frozen=True)
class CheckResult:
    """One check of ``alerts check``: its title, whether it passed, what the tool printed."""

    check: str
    ok: bool
    output: str


@alerts_app.command("check")
def alerts_check(
    rules: RulesOpt = "default",
    speedup: Annotated[float, typer.Option("--speedup", min=1.0, help="Also check the copy scaled by this.")] = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """promtool check + unit tests of the rules, amtool check of the Alertmanager config, scaled copy."""
    import yaml

    from faultdrill.experiments.alerting.timescale import scale_rules
    from faultdrill.experiments.spec.rules import alert_rules, alertmanager_path, load_rules, rules_path
    from faultdrill.faults.errors import ConfigError

    path = rules_path(rules, spec_file=None)
    alert_rules(path)  # a missing or malformed file, or one over the input limits: a located ConfigError, exit 2
    try:
        scaled_doc = scale_rules(load_rules(path), speedup, min_range_s=4.0)
    except ValueError as exc:  # a rule the time scaling cannot read
        raise ConfigError(f"cannot scale the rules: {exc}", file=str(path), field="groups") from None
    am = alertmanager_path("default", spec_file=None)
    tests = sorted((path.parent / "tests").glob("*.yml")) if rules == "default" else []
    with tempfile.TemporaryDirectory(prefix="faultdrill-rules-") as tmp:
        scaled = Path(tmp) / "rules.scaled.yml"
        scaled.write_text(yaml.safe_dump(scaled_doc))
        checks = [("promtool check rules", ["promtool", "check", "rules", str(path)]),
                  (f"promtool check rules (÷{speedup:g})", ["promtool", "check", "rules", str(scaled)]),
                  ("amtool check-config", ["amtool", "check-config", str(am)])]  # fmt: skip
        if tests:
            argv = ["promtool", "test", "rules", *map(str, tests)]
            checks.append((f"promtool test rules ({len(tests)} files)", argv))
        results = [CheckResult(title, *_tool(argv)) for title, argv in checks]
    failed = sum(not r.ok for r in results)
    if as_json:
        emit_json({"rules_file": str(path), "alertmanager_file": str(am), "ok": not failed,
                   "checks": [asdict(r) for r in results]})  # fmt: skip
        raise typer.Exit(1 if failed else 0)
    for r in results:
        typer.echo(f"{'ok  ' if r.ok else 'FAIL'} {r.check}")
        if not r.ok:
            typer.echo("     " + r.output.replace("\n", "\n     "))
    raise typer.Exit(1 if failed else 0)


@alerts_app.command("export")
def alerts_export(
    rules: RulesOpt = "default",
    prometheusrule: Annotated[bool, typer.Option("--prometheusrule", help="As a Prometheus Operator PrometheusRule.")]
    = False,
) -> None:
    """Print the rules for another system: ``--prometheusrule`` for the Kubernetes manifests."""
    from faultdrill.experiments.platforms.kubernetes.manifests import prometheus_rule
    from faultdrill.experiments.spec.rules import rules_path

    path = rules_path(rules, spec_file=None)
    if not prometheusrule:
        typer.echo(path.read_text(encoding="utf-8"), nl=False)
        return
    typer.echo(prometheus_rule(path), nl=False)
