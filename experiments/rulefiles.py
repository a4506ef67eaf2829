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

import yaml

from faults.errors import ConfigError

__all__ = ["DEFAULT_ALERTMANAGER", "DEFAULT_RULES", "alert_rules", "alertmanager_path", "rules_path"]


def _alerts_dir() -> Path:
    import target_service

    return Path(target_service.__file__).resolve().parent / "alerts"


DEFAULT_RULES = "target_service/alerts/rules.yml"
DEFAULT_ALERTMANAGER = "target_service/alerts/alertmanager.yml"


def _resolve(value: str, default_name: str, spec_file: str | Path | None) -> Path:
    if value == "default":
        return _alerts_dir() / default_name
    path = Path(value).expanduser()
    if not path.is_absolute() and spec_file is not None and not str(spec_file).startswith("<"):
        path = Path(spec_file).resolve().parent / path
    return path


def rules_path(value: str, *, spec_file: str | Path | None) -> Path:
    """The rules file ``alerting.rules`` names (``default`` = the shipped rules)."""
    return _resolve(value, "rules.yml", spec_file)


def alertmanager_path(value: str, *, spec_file: str | Path | None) -> Path:
    """The Alertmanager config ``alerting.alertmanager`` names (``default`` = the shipped one)."""
    return _resolve(value, "alertmanager.yml", spec_file)


def alert_rules(path: Path) -> dict[str, dict[str, str]]:
    """Alert name → its labels (``severity`` …) for every alerting rule in a Prometheus rules file.

    A missing or malformed file is a ConfigError naming it (exit 2).
    """
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the alert rules: {exc.strerror or exc}", file=str(path),
                          field="alerting.rules") from None  # fmt: skip
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"alert rules are not valid YAML: {getattr(exc, 'problem', exc)}", file=str(path),
                          line=mark.line + 1 if mark else None) from None  # fmt: skip
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list):
        raise ConfigError("not a Prometheus rules file: expected a top-level 'groups' list", file=str(path),
                          field="groups")  # fmt: skip
    found: dict[str, dict[str, str]] = {}
    for group in groups:
        for rule in (group or {}).get("rules") or []:
            if isinstance(rule, dict) and isinstance(rule.get("alert"), str):
                labels = rule.get("labels") or {}
                found.setdefault(rule["alert"], {str(k): str(v) for k, v in labels.items()})
    return found
