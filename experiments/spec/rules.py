"""Where a run's alert rules and Alertmanager config come from, and what alerts they define.

The shipped files live with the target (``target_service/alerts/rules.yml`` and
``alertmanager.yml``: the system under test owns its alerting, as it would in production).
A spec may name others (``alerting.rules: my-rules.yml``, relative to the spec file) — that is
also how a test feeds a deliberately broken rule file to prove an experiment notices.

Example::

    >>> path = rules_path("default", spec_file=None)
    >>> "InferenceGPUMemoryPressure" in alert_rules(path)
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faultdrill.faults.errors import ConfigError
from faultdrill.faults.inputlimits import load_yaml, read_text

__all__ = ["DEFAULT_ALERTMANAGER", "DEFAULT_RULES", "PLATFORM_RULES", "alert_rules", "alertmanager_path", "load_rules",
           "rules_path"]  # fmt: skip


def _alerts_dir() -> Path:
    from faultdrill import target_service

    return Path(target_service.__file__).resolve().parent / "alerts"


DEFAULT_RULES = "target_service/alerts/rules.yml"
PLATFORM_RULES = Path(__file__).resolve().parents[1] / "alerting" / "platform" / "rules.yml"
"""Kubernetes-level alerts for any workload (OOM kill, crash loop, not ready), on the platform exporter's
kube-state-metrics series: loaded beside a described server's rules (the bundled target's rules have their own)."""
DEFAULT_ALERTMANAGER = "target_service/alerts/alertmanager.yml"


def _resolve(value: str, default_name: str, spec_file: str | Path | None) -> Path:
    if value == "default":
        return _alerts_dir() / default_name
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user that does not exist: the name as written (reading it says what is wrong)
        path = Path(value)
    if not path.is_absolute() and spec_file is not None and not str(spec_file).startswith("<"):
        path = Path(spec_file).resolve().parent / path
    return path


def rules_path(value: str, *, spec_file: str | Path | None, service_rules: str | None = None) -> Path:
    """The rules file ``alerting.rules`` names: ``default`` is the described service's (``service_rules``:
    ``target.service.metrics.rules``, its profile's by default), else the shipped rules of the bundled target."""
    if value == "default" and service_rules is not None:
        return _resolve(service_rules, "rules.yml", spec_file)
    return _resolve(value, "rules.yml", spec_file)


def alertmanager_path(value: str, *, spec_file: str | Path | None) -> Path:
    """The Alertmanager config ``alerting.alertmanager`` names (``default`` = the shipped one)."""
    return _resolve(value, "alertmanager.yml", spec_file)


def alert_rules(path: Path) -> dict[str, dict[str, str]]:
    """Alert name → its labels (``severity`` …) for every alerting rule in a Prometheus rules file.

    A missing or malformed file is a ConfigError naming it (exit 2), and so is one over the input limits
    of ``faults.inputlimits`` (size, nesting, nodes with aliases expanded).
    """
    doc = load_rules(path)
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list):
        raise ConfigError("not a Prometheus rules file: expected a top-level 'groups' list", file=str(path),
                          field="groups")  # fmt: skip
    found: dict[str, dict[str, str]] = {}
    for group in groups:
        rules = group.get("rules") if isinstance(group, dict) else None
        for rule in rules if isinstance(rules, list) else []:
            if isinstance(rule, dict) and isinstance(rule.get("alert"), str):
                labels = rule.get("labels")
                found.setdefault(rule["alert"], {str(k): str(v) for k, v in labels.items()}
                                 if isinstance(labels, dict) else {})  # fmt: skip
    return found


def load_rules(path: Path) -> Any:
    """The YAML document of a rules file, read within the input limits; every problem a located ConfigError."""
    try:
        text = read_text(path, what="rules file")
    except OSError as exc:
        raise ConfigError(f"cannot read the alert rules: {exc.strerror or exc}", file=str(path),
                          field="alerting.rules") from None  # fmt: skip
    return load_yaml(text, str(path), prefix="alert rules are not valid YAML")
