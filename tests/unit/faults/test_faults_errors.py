"""The error hierarchy: names are pinned, messages render their context."""

from __future__ import annotations

import faultdrill.faults.errors as errors_mod
from faultdrill.faults.base import Problem
from faultdrill.faults.errors import (
    BlastRadiusError,
    ConfigError,
    FaultdrillError,
    InjectionError,
    LedgerError,
    PluginError,
    PreflightError,
    RollbackError,
)


def test_public_api_is_pinned() -> None:
    assert sorted(errors_mod.__all__) == [
        "BlastRadiusError",
        "ConfigError",
        "FaultdrillError",
        "InjectionError",
        "LedgerError",
        "PluginError",
        "PreflightError",
        "RollbackError",
    ]
    for name in errors_mod.__all__:
        assert issubclass(getattr(errors_mod, name), FaultdrillError)


def test_config_error_renders_location_field_and_suggestion() -> None:
    err = ConfigError(
        "unknown key 'durtion'",
        file="exp.yaml",
        line=12,
        column=5,
        field="faults[0].durtion",
        suggestion="duration",
    )
    assert err.location() == "exp.yaml:12:5"
    assert str(err) == (
        "exp.yaml:12:5: faults[0].durtion: unknown key 'durtion' (did you mean 'duration'?)"
    )


def test_config_error_without_location() -> None:
    err = ConfigError("must be > 0", field="duration", expected="a positive duration")
    assert err.location() == ""
    assert str(err) == "duration: must be > 0 (expected a positive duration)"


def test_preflight_error_lists_every_problem() -> None:
    err = PreflightError(
        [Problem("not_root", "needs root", "run as root"), Problem("no_nft", "no iptables")],
        fault="partition",
    )
    text = str(err)
    assert text.splitlines() == [
        "fault 'partition' cannot run here:",
        "  - [not_root] needs root (hint: run as root)",
        "  - [no_nft] no iptables",
    ]
    assert len(err.problems) == 2


def test_blast_radius_names_target_and_allow_list() -> None:
    err = BlastRadiusError("pid", "1", allowed=["4242", "4243"])
    assert "pid '1'" in str(err) and "4242, 4243" in str(err)
    assert "allowed: nothing" in str(BlastRadiusError("port", "22"))


def test_plugin_and_scoped_errors() -> None:
    err = PluginError("unknown fault 'fkae'", suggestion="fake", sources=("a", "b"))
    assert str(err) == "unknown fault 'fkae' (did you mean 'fake'?)"
    assert err.sources == ("a", "b")
    assert str(RollbackError("boom", fault="fake", injection_id="ab")) == (
        "fault 'fake' (injection ab): boom"
    )
    assert str(InjectionError("boom")) == "boom"
    assert str(LedgerError("bad", path="/x.json")) == "/x.json: bad"
