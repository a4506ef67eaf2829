"""Where a report's journal comes from: a run directory, a ``journal.json`` or a ``.json.gz``.

Every problem is a :class:`~faults.errors.ConfigError` that names the file and, for a journal
that does not match the model, the field — the CLI turns it into one line and exit 2.

>>> from pathlib import Path
>>> journal_path(Path("runs/smoke-1"))          # a directory means its journal.json
PosixPath('runs/smoke-1/journal.json')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from faultdrill.experiments.journal import READABLE_VERSIONS, Journal
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.inputlimits import MAX_JOURNAL_BYTES, gunzip_bounded, json_depth_error, read_bytes

__all__ = ["journal_path", "load_journal"]


def journal_path(path: Path) -> Path:
    """``RUN_DIR`` → ``RUN_DIR/journal.json``; a file path is kept as it is."""
    return path / "journal.json" if path.is_dir() or not path.suffix else path


def load_journal(source: Path | Journal) -> Journal:
    """Read and validate a journal (or pass one through)."""
    if isinstance(source, Journal):
        return source
    path = journal_path(Path(source))
    try:  # at most MAX_JOURNAL_BYTES, refused before it is read
        raw = read_bytes(path, limit=MAX_JOURNAL_BYTES, what="journal")
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise ConfigError("no such run directory", file=str(path.parent)) from None
        where = "this run directory has no journal.json" if path.name == "journal.json" else "no such file"
        raise ConfigError(f"cannot read journal: {where}", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read journal: {exc.strerror}", file=str(path)) from None
    if raw[:2] == b"\x1f\x8b":
        try:  # a gzip bomb stops at MAX_JOURNAL_BYTES decompressed
            raw = gunzip_bounded(raw, str(path), limit=MAX_JOURNAL_BYTES, what="journal")
        except (OSError, EOFError) as exc:
            raise ConfigError(f"not a journal: broken gzip data ({exc})", file=str(path)) from None
    try:  # pydantic-core parses and validates in one pass, faster than json.loads + model_validate
        journal = Journal.model_validate_json(raw)
    except ValidationError as exc:
        _explain(raw, path, exc)
    if journal.version not in READABLE_VERSIONS:
        _unsupported(journal.version, path)
    return journal


def _unsupported(version: object, path: Path) -> NoReturn:
    readable = ", ".join(map(str, READABLE_VERSIONS))
    raise ConfigError(f"journal version {version!r} is not supported (this faultdrill reads versions {readable})",
                      file=str(path), field="version")


def _explain(raw: bytes, path: Path, exc: ValidationError) -> NoReturn:
    """Say why a journal did not validate: bad JSON (where), another version, or which field."""
    first = exc.errors(include_url=False, include_input=False)[0]
    detail = str((first.get("ctx") or {}).get("error"))
    if first["type"] == "json_invalid" and "recursion limit" in detail:  # pydantic-core stops at JSON_DEPTH_LIMIT
        raise json_depth_error(raw, str(path), "a journal", detail)
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError:
        raise ConfigError("not a journal: not UTF-8 text", file=str(path)) from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"not a journal: {err.msg}", file=str(path), line=err.lineno, column=err.colno) from None
    except RecursionError:
        raise json_depth_error(raw, str(path), "a journal") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"not a journal: expected a JSON object, found {type(doc).__name__}", file=str(path))
    if doc.get("version") not in READABLE_VERSIONS:
        _unsupported(doc.get("version"), path)
    field = ".".join(str(p) for p in first["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    raise ConfigError(f"not a valid journal: {first['msg']}{more}", file=str(path), field=field) from None
