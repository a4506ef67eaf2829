"""``faultdrill alerts …``: the target's alert rules from the terminal — list them, check them.

``check`` runs exactly what CI runs on the shipped rules: ``promtool check rules``,
``promtool test rules`` over ``target_service/alerts/tests/*.yml`` and ``amtool check-config``,
plus the time-scaled copy a run would load (``--speedup``), so an edited rule is proven before a
game day uses it.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["alerts_app"]

alerts_app = typer.Typer(help="The target's Prometheus alert rules: list, check.", no_args_is_help=True)

RulesOpt = Annotated[str, typer.Option("--rules", help="A rules file (default: the shipped rules).")]


@alerts_app.command("list")
def alerts_list(rules: RulesOpt = "default") -> None:
    """Every alerting rule: name, severity (→ receiver), for, runbook."""
    import yaml

    from experiments.rulefiles import alert_rules, rules_path

    path = rules_path(rules, spec_file=None)
    alert_rules(path)  # a missing or malformed file: a located ConfigError, exit 2
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    receiver = {"critical": "pager", "warning": "chat", "ticket": "ticket"}
    table = Table("alert", "severity → receiver", "for", "runbook", title=str(path))
    for group in doc["groups"]:
        for rule in group.get("rules") or []:
            if "alert" in rule:
                sev = str((rule.get("labels") or {}).get("severity", "-"))
                table.add_row(rule["alert"], f"{sev} → {receiver.get(sev, '?')}", str(rule.get("for", "0s")),
                              str((rule.get("annotations") or {}).get("runbook_url", "-")))  # fmt: skip
    Console().print(table)


def _tool(argv: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        return False, f"{argv[0]} not found: run `make setup` (apt-get install prometheus prometheus-alertmanager)"
    return done.returncode == 0, (done.stdout + done.stderr).strip()


@alerts_app.command("check")
def alerts_check(
    rules: RulesOpt = "default",
    speedup: Annotated[float, typer.Option("--speedup", min=1.0, help="Also check the copy scaled by this.")] = 60.0,
) -> None:
    """promtool check + unit tests of the rules, amtool check of the Alertmanager config, scaled copy."""
    import yaml

    from experiments.rulefiles import alertmanager_path, rules_path
    from experiments.timescale import scale_rules

    path = rules_path(rules, spec_file=None)
    am = alertmanager_path("default", spec_file=None)
    tests = sorted((path.parent / "tests").glob("*.yml")) if rules == "default" else []
    with tempfile.TemporaryDirectory(prefix="faultdrill-rules-") as tmp:
        scaled = Path(tmp) / "rules.scaled.yml"
        scaled.write_text(yaml.safe_dump(scale_rules(yaml.safe_load(path.read_text()), speedup, min_range_s=4.0)))
        checks = [("promtool check rules", ["promtool", "check", "rules", str(path)]),
                  (f"promtool check rules (÷{speedup:g})", ["promtool", "check", "rules", str(scaled)]),
                  ("amtool check-config", ["amtool", "check-config", str(am)])]  # fmt: skip
        if tests:
            argv = ["promtool", "test", "rules", *map(str, tests)]
            checks.append((f"promtool test rules ({len(tests)} files)", argv))
        failed = 0
        for title, argv in checks:
            ok, text = _tool(argv)
            failed += not ok
            typer.echo(f"{'ok  ' if ok else 'FAIL'} {title}")
            if not ok:
                typer.echo("     " + text.replace("\n", "\n     "))
    raise typer.Exit(1 if failed else 0)


@alerts_app.command("export")
def alerts_export(
    rules: RulesOpt = "default",
    prometheusrule: Annotated[bool, typer.Option("--prometheusrule", help="As a Prometheus Operator PrometheusRule.")]
    = False,
) -> None:
    """Print the rules for another system: ``--prometheusrule`` for the Kubernetes manifests."""
    from experiments.platforms.kube_manifests import prometheus_rule
    from experiments.rulefiles import rules_path

    path = rules_path(rules, spec_file=None)
    if not prometheusrule:
        typer.echo(path.read_text(encoding="utf-8"), nl=False)
        return
    typer.echo(prometheus_rule(path), nl=False)
