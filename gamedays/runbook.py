"""Executable runbooks: Markdown a person reads on an incident, with steps a machine can run.

The format (``docs/runbooks.md`` has the full reference) renders as ordinary Markdown on GitHub::

    # GPU memory exhaustion

    Alerts: `InferenceGPUMemoryPressure`, `InferenceCUDAOOM`

    Free prose: symptoms, impact, escalation …

    ## Steps

    ### 1. Release what the replica holds
    ```faultdrill
    release-device-memory $REPLICA
    ```
    ```expect
    probe readiness $REPLICA is true within 30s
    ```

- ``# title`` comes first; an optional ``Alerts:`` line names the alerts (in backticks) the
  runbook answers.
- ``## Steps`` holds the steps, each ``### N. title`` (numbered 1, 2, 3 … in order) with free
  prose, at most ONE command block (``sh`` — a shell script — or ``faultdrill`` — one action,
  see :mod:`gamedays.actions`) and at most one ``expect`` block (one check per line, see
  :mod:`gamedays.checks`). No other block language is allowed inside a step, so a typo cannot
  hide a command. Other ``##`` sections are prose, with any code blocks they like.
- ``$NAME`` / ``${NAME}`` are the runbook variables of :data:`VARIABLES`, bound by the caller.

:func:`parse_runbook` returns a :class:`Runbook` or raises the first :class:`ConfigError`
(``file:line: field: message``); :func:`parse_runbook_text` returns every syntax error.

Example::

    >>> rb = parse_runbook_text("# T\\n\\n## Steps\\n\\n### 1. Wait\\n```faultdrill\\nwait 1s\\n```\\n",
    ...                         file="t.md")[0]
    >>> rb.steps[0].command.action.name, rb.steps[0].line
    ('wait', 5)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from faultdrill.faults.errors import ConfigError
from faultdrill.faults.inputlimits import read_text
from faultdrill.gamedays.actions import Action, ActionSyntaxError, parse_action
from faultdrill.gamedays.checks import Check, CheckSyntaxError, parse_check

__all__ = [
    "SHELL_VARIABLES",
    "VARIABLES",
    "Command",
    "Runbook",
    "Step",
    "expand_runbook_args",
    "is_index",
    "parse_runbook",
    "parse_runbook_text",
    "runbook_files",
    "variables_in",
]

VARIABLES: dict[str, str] = {
    "REPLICA": "the replica the alert or fault names, e.g. replica-0 (the alert's pod label)",
    "REPLICA_URL": "base URL of $REPLICA's inference API (from the platform's topology)",
    "TARGET": "base URL of the inference service (the readiness-aware endpoint clients use)",
    "PROM": "base URL of Prometheus",
    "FS": "base URL of the feature store",
    "CA": "CA certificate file that verifies the feature store (and the target when TLS is on)",
    "NS": "Kubernetes namespace (default faultdrill)",
}
"""Every variable a runbook may use, and what the caller binds it to."""

SHELL_VARIABLES = frozenset({"HOME", "PATH", "PWD", "USER", "TMPDIR", "SHELL", "LANG", "TERM"})
"""Upper-case environment variables an ``sh`` block may use besides :data:`VARIABLES`."""

COMMAND_LANGS = ("sh", "faultdrill")
BLOCK_LANGS = (*COMMAND_LANGS, "expect")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_STEP = re.compile(r"^(\d+)\.\s+(\S.*)$")
_FENCE = re.compile(r"^(\s{0,3})(`{3,}|~{3,})\s*([^`\s]*)\s*(.*)$")
_ALERTS = re.compile(r"^\s*\**Alerts?\**:\s*(.*)$")
_TICKED = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Command:
    """The one command of a step: a shell script, or one faultdrill action."""

    kind: Literal["sh", "faultdrill"]
    text: str
    line: int
    """Line of the command's first line in the file (the script's line ``k`` is ``line + k``)."""
    action: Action | None = None


@dataclass(frozen=True)
class Step:
    """``### N. title``: prose, an optional command and the checks of its expected outcome."""

    number: int
    title: str
    line: int
    prose: str = ""
    command: Command | None = None
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Runbook:
    """A parsed runbook file."""

    path: Path
    title: str
    steps: tuple[Step, ...]
    alerts: tuple[str, ...] = ()
    alerts_line: int | None = None
    prose: str = ""
    """The text before ``## Steps`` (what the alert means, impact …)."""
    title_line: int = 1

    @property
    def name(self) -> str:
        """The file's stem: the ``source`` of this runbook's timeline events."""
        return self.path.stem


def variables_in(text: str) -> list[str]:
    """Names of the ``$NAME`` / ``${NAME}`` references in ``text``, in order."""
    return [m.group(1) or m.group(2) for m in _VAR.finditer(text)]


def runbook_files(directory: Path) -> list[Path]:
    """The runbooks of a directory: every ``*.md`` but its ``README.md`` index."""
    return sorted(p for p in Path(directory).glob("*.md") if not is_index(p))


def is_index(path: Path) -> bool:
    """A folder's ``README.md`` is its index, never a runbook (``gamedays/runbooks/*.md`` names it too)."""
    return Path(path).name.lower() == "readme.md"


def expand_runbook_args(args: list[Path]) -> tuple[list[Path], list[Path]]:
    """Command-line arguments → (runbooks, skipped indexes): directories expand to their runbooks, and a
    ``README.md`` a shell glob brought in is skipped (and reported), exactly as a directory skips it."""
    runbooks: list[Path] = []
    skipped: list[Path] = []
    for arg in args:
        if arg.is_dir():
            runbooks.extend(runbook_files(arg))
        elif is_index(arg):
            skipped.append(arg)
        else:
            runbooks.append(arg)
    return runbooks, skipped


def parse_runbook(path: Path) -> Runbook:
    """Parse a runbook file; the first syntax error is raised as a located ConfigError."""
    path = Path(path)
    try:
        text = read_text(path, what="runbook")  # at most MAX_TEXT_BYTES, UTF-8
    except OSError as exc:
        raise ConfigError(f"cannot read the runbook: {exc.strerror or exc}", file=str(path)) from None
    runbook, errors = parse_runbook_text(text, file=str(path))
    if errors:
        raise errors[0]
    assert runbook is not None
    return runbook


@dataclass
class _Block:
    lang: str
    line: int
    lines: list[tuple[int, str]]


@dataclass
class _StepDraft:
    number: int
    title: str
    line: int
    prose: list[str] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)


def parse_runbook_text(text: str, *, file: str = "<runbook>") -> tuple[Runbook | None, list[ConfigError]]:
    """Parse runbook text; returns the runbook (None if it has no usable shape) and every error."""
    errors: list[ConfigError] = []

    def err(line: int, message: str, fld: str | None = None, suggestion: str | None = None) -> None:
        errors.append(ConfigError(message, file=file, line=line, field=fld, suggestion=suggestion))

    lines = text.splitlines()
    title: str | None = None
    title_line = 1
    alerts: tuple[str, ...] = ()
    alerts_line: int | None = None
    section: str | None = None  # the current "##" heading, lower case
    steps_line: int | None = None
    drafts: list[_StepDraft] = []
    intro: list[str] = []
    fence: tuple[str, _Block] | None = None  # (closing marker, block)
    for no, raw in enumerate(lines, start=1):
        if fence is not None:
            marker, block = fence
            if raw.strip().startswith(marker[0] * len(marker)) and set(raw.strip()) <= {marker[0]}:
                fence = None
                if section == "steps" and drafts:
                    drafts[-1].blocks.append(block)
                elif section == "steps" and block.lang in BLOCK_LANGS:
                    err(block.line, f"a '{block.lang}' block outside a step: put it under a '### N. title' heading",
                        "steps")  # fmt: skip
            else:
                block.lines.append((no, raw))
            continue
        if m := _FENCE.match(raw):
            lang = m.group(3).lower()
            fence = (m.group(2), _Block(lang, no, []))
            if section == "steps" and drafts and lang not in BLOCK_LANGS:
                close = difflib.get_close_matches(lang, BLOCK_LANGS, n=1, cutoff=0.5)
                shown = f"'{lang}'" if lang else "(none)"
                err(no, f"unknown block language {shown} in a step (expected one of: sh, faultdrill, expect)",
                    f"steps[{drafts[-1].number}]", close[0] if close else None)  # fmt: skip
            continue
        if h := _HEADING.match(raw):
            level, content = len(h.group(1)), h.group(2)
            if level == 1 and title is None:
                title, title_line = content, no
                continue
            if level <= 2:
                section = content.strip().lower() if level == 2 else None
                if section == "steps":
                    if steps_line is not None:
                        err(no, "a second '## Steps' section (a runbook has one)", "steps")
                    steps_line = no
                continue
            if section == "steps" and level == 3:
                s = _STEP.match(content)
                expected = drafts[-1].number + 1 if drafts else 1
                if s is None:
                    err(no, f"step heading must read '### N. <title>', got '### {content}'", f"steps[{expected}]")
                    drafts.append(_StepDraft(expected, content.strip(), no))  # its blocks still get checked
                    continue
                number = int(s.group(1))
                if number != expected:
                    err(no, f"step numbered {number}, expected {expected} (steps are numbered 1, 2, 3 … in order)",
                        f"steps[{number}]")  # fmt: skip
                drafts.append(_StepDraft(number, s.group(2).strip(), no))
                continue
        if section == "steps" and drafts:
            drafts[-1].prose.append(raw)
        elif steps_line is None:
            if alerts_line is None and (a := _ALERTS.match(raw)):
                alerts_line = no
                alerts = tuple(t.strip() for t in _TICKED.findall(a.group(1)))
                if not alerts:
                    err(no, "the Alerts: line names no alert (write each name in backticks)", "alerts")
                continue
            if title is not None:
                intro.append(raw)
    if fence is not None:
        err(fence[1].line, f"code block opened here is never closed ({fence[0]})")
    if title is None:
        err(1, "no title: a runbook starts with '# <title>'", "title")
    if steps_line is None:
        err(max(len(lines), 1), "no '## Steps' section", "steps")
    elif not drafts:
        err(steps_line, "the '## Steps' section has no step ('### 1. <title>')", "steps")
    steps = [_finish_step(d, err) for d in drafts]
    if title is None or not steps:
        return None, errors
    runbook = Runbook(path=Path(file), title=title, steps=tuple(steps), alerts=alerts, alerts_line=alerts_line,
                      prose="\n".join(intro).strip(), title_line=title_line)  # fmt: skip
    return runbook, errors


def _finish_step(draft: _StepDraft, err: Callable[..., None]) -> Step:
    where = f"steps[{draft.number}]"
    command: Command | None = None
    checks: list[Check] = []
    seen_expect: int | None = None
    for block in draft.blocks:
        body = [(no, text) for no, text in block.lines if text.strip() and not text.strip().startswith("#")]
        if block.lang in COMMAND_LANGS:
            if command is not None:
                err(block.line, f"a second command block (the first is on line {command.line}; one sh or faultdrill "
                    "block per step)", f"{where}.command")  # fmt: skip
                continue
            if not body:
                err(block.line, f"empty {block.lang} block", f"{where}.command")
                continue
            if block.lang == "sh":
                kept = [i for i, (_, text) in enumerate(block.lines) if text.strip()]
                chosen = block.lines[kept[0]:kept[-1] + 1]
                command = Command("sh", "\n".join(text for _, text in chosen), chosen[0][0])
                continue
            if len(body) > 1:
                err(body[1][0], "a faultdrill block holds one action (put the next one in its own step)",
                    f"{where}.command")  # fmt: skip
            no, line = body[0]
            try:
                action = parse_action(line.strip())
            except ActionSyntaxError as exc:
                err(no, str(exc), f"{where}.command", exc.suggestion)
                continue
            command = Command("faultdrill", line.strip(), no, action)
        elif block.lang == "expect":
            if seen_expect is not None:
                err(block.line, f"a second expect block (the first is on line {seen_expect}; put every check of the "
                    "step in one)", f"{where}.expect")  # fmt: skip
                continue
            seen_expect = block.line
            if not body:
                err(block.line, "empty expect block", f"{where}.expect")
            for index, (no, line) in enumerate(body):
                try:
                    checks.append(parse_check(line.strip(), line=no, index=index))
                except CheckSyntaxError as exc:
                    err(no, str(exc), f"{where}.expect[{index}]", exc.suggestion)
    prose = "\n".join(draft.prose).strip()
    return Step(draft.number, draft.title, draft.line, prose, command, tuple(checks))
