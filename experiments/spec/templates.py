"""Templates in a described service's command, env, paths and probes: ``{port}``, ``{replica}``, ``{spec_dir}`` …

A service faultdrill starts (``target.service: {kind: process, …}``) cannot know before the run which ports
it will listen on or which replica it is, so its spec names them and the platform fills them in, per
replica, just before it starts the process. The names are few and fixed:

=================  ===========================================================================
``{port}``         the replica's ``http`` port (= ``{port.http}``)
``{port.NAME}``    the port faultdrill allocated for NAME (a name of ``target.service.ports``)
``{replica}``      the replica's service name (``server-0``)
``{index}``        its index (``0``)
``{workdir}``      the run's platform directory (logs, tokens)
``{spec_dir}``     the folder of the spec file
``{python}``       the interpreter faultdrill runs on (``sys.executable``)
``{model}``        the model's name (``target.service.model.name``)
``{url}``          a dependency's address through its fault proxy (only in ``via.arg``)
=================  ===========================================================================

``{{`` and ``}}`` stand for literal braces. Checking happens when the spec is loaded (an unknown name is
an error located at the string, with a did-you-mean), so a run never starts a command it cannot fill.

Example::

    names = TemplateNames(ports=("http", "metrics"), model=True)
    check_template("--port={port} --metrics={port.metrics}", names)      # None: fine
    check_template("--port={prot}", names)                              # TemplateProblem(… 'port' …)
    render("--port={port}", {"port": "8123", "port.http": "8123"})       # '--port=8123'
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FIXED_NAMES", "TemplateNames", "TemplateProblem", "check_template", "render", "template_names"]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
FIXED_NAMES: tuple[str, ...] = ("port", "replica", "index", "workdir", "spec_dir", "python")
"""Names every template may use (``port.NAME``, ``model`` and ``url`` depend on the spec and the field)."""


@dataclass(frozen=True)
class TemplateNames:
    """What one field's templates may name: the declared ports, whether a model is declared, ``{url}``."""

    ports: tuple[str, ...] = ("http",)
    model: bool = False
    url: bool = False
    fixed: tuple[str, ...] = FIXED_NAMES
    """The names with a fixed meaning this field may use (a dependency's command: no replica, no port)."""

    def allowed(self) -> list[str]:
        names = [*self.fixed, *(f"port.{p}" for p in self.ports)]
        return names + ["model"] * self.model + ["url"] * self.url


@dataclass(frozen=True)
class TemplateProblem:
    """Why a template cannot be filled: the message, what would fit, the closest name."""

    message: str
    expected: str
    suggestion: str | None = None


def template_names(text: str) -> list[str]:
    """The names ``text`` refers to, in order (``{{``/``}}`` are not names)."""
    return [m[1] for m in _TOKEN.finditer(text) if m[1] is not None]


def check_template(text: str, names: TemplateNames) -> TemplateProblem | None:
    """None when every ``{name}`` of ``text`` is one ``names`` allows and its braces balance."""
    allowed = names.allowed()
    expected = "one of " + ", ".join(f"{{{n}}}" for n in allowed) + " ({{ and }} for literal braces)"
    for m in _TOKEN.finditer(text):
        if m[0] in ("{", "}"):
            return TemplateProblem(f"unbalanced '{m[0]}' in {text!r}", "{name}, or {{ and }} for literal braces")
        name = m[1]
        if name is None or name in allowed:
            continue
        if name == "model" and not names.model:
            return TemplateProblem("{model} names the model, but none is declared",
                                   "target.service.model: {name: …}, or no {model}")  # fmt: skip
        if name == "url" and not names.url:
            return TemplateProblem("{url} is a dependency's proxied address: it has a meaning in via.arg only",
                                   "the dependency's via: {arg: \"--flag={url}\"}")  # fmt: skip
        if name.startswith("port.") and name not in allowed:
            port = name.removeprefix("port.")
            return TemplateProblem(f"unknown port '{port}' in {{{name}}}: target.service.ports does not declare it",
                                   "a port of " + ", ".join(names.ports) + " (or add it to target.service.ports)",
                                   _closest(name, allowed))  # fmt: skip
        return TemplateProblem(f"unknown template {{{name}}}", expected, _closest(name, allowed))
    return None


def render(text: str, values: Mapping[str, str]) -> str:
    """``text`` with every ``{name}`` replaced by ``values[name]`` (checked names: a KeyError is a bug)."""

    def one(m: re.Match[str]) -> str:
        if m[0] in ("{{", "}}"):
            return m[0][0]
        return values[m[1]]

    return _TOKEN.sub(one, text)


def _closest(name: str, options: list[str]) -> str | None:
    return next(iter(difflib.get_close_matches(name, options, n=1)), None)
