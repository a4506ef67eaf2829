"""A local model registry: versioned artifacts with a checksum, verified before loading.

Layout: ``<root>/<name>/<version>/model.pt`` (a ``state_dict``), ``manifest.json``
(its sha256, architecture, metrics and I/O signature) and, for a trained ``digits``, ``known_answers.json``
(fixed requests with the answers a correct replica gives: ``target_service/answers.py``). A version
appears all at once (it is built in a hidden directory and renamed into place), several versions
coexist, and a load checks the checksum *before* ``torch.load`` ever sees the bytes.

Example::

    >>> reg = ModelRegistry(tmp_path)
    >>> model, metrics = train_digits()
    >>> reg.publish("digits", model, {"kind": "digits"}, metrics).version
    '1'
    >>> reg.load("digits", "latest", torch.device("cpu")).manifest.sha256 == reg.manifest(
    ...     "digits", "1").sha256
    True
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from .models import (
    HEAVY_DEFAULT_DEPTH,
    HEAVY_DEFAULT_WIDTH,
    INPUT_FEATURES,
    NUM_CLASSES,
    HeavyNet,
    build_model,
    digits_known_answers,
    train_digits,
)

__all__ = ["LoadedModel", "ModelLoadError", "ModelManifest", "ModelRegistry", "TensorSpec"]

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
KNOWN_ANSWERS_FILE = "known_answers.json"


class TensorSpec(BaseModel):
    """One input or output of the model (Open Inference Protocol metadata)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    datatype: str
    shape: list[int]


class ModelManifest(BaseModel):
    """What ``manifest.json`` records about one version of a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    sha256: str
    arch: dict[str, Any]
    metrics: dict[str, float]
    created: str
    torch_version: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class ModelLoadError(Exception):
    """A model could not be loaded; the message names the path and what is wrong."""


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module
    manifest: ModelManifest


def _version_key(version: str) -> tuple[int, int, str]:
    # Numeric versions sort numerically ("10" after "9") and above non-numeric ones.
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


class ModelRegistry:
    """Versioned model artifacts under ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str, version: str) -> Path:
        return self.root / name / version

    def publish(
        self,
        name: str,
        model: nn.Module,
        arch: dict[str, Any],
        metrics: dict[str, float],
        version: str | None = None,
        known_answers: dict[str, Any] | None = None,
    ) -> ModelManifest:
        """Store ``model``'s weights as a new version (``None``: the next integer), with its known-answer set
        when one is given (written as ``known_answers.json``, its ``version`` filled in)."""
        _check_name("model name", name)
        if version is not None:
            _check_name("version", version)
        buf = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, buf)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        parent = self.root / name
        parent.mkdir(parents=True, exist_ok=True)
        # Built in a hidden directory, then renamed: readers never see half a version,
        # and rename refuses to replace an existing version (two publishers cannot clash).
        staging = parent / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            _write_synced(staging / MODEL_FILE, data)
            for _attempt in range(100):
                ver = version if version is not None else self._next_version(name)
                manifest = ModelManifest(
                    name=name,
                    version=ver,
                    sha256=sha,
                    arch=dict(arch),
                    metrics={k: float(v) for k, v in metrics.items()},
                    created=datetime.now(UTC).isoformat(timespec="seconds"),
                    torch_version=torch.__version__,
                    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, INPUT_FEATURES])],
                    outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, NUM_CLASSES])],
                )
                _write_synced(staging / MANIFEST_FILE, manifest.model_dump_json(indent=2).encode())
                if known_answers is not None:
                    doc = {**known_answers, "model": name, "version": ver}
                    _write_synced(staging / KNOWN_ANSWERS_FILE, json.dumps(doc, separators=(",", ":")).encode())
                try:
                    os.rename(staging, parent / ver)
                except OSError:
                    if version is not None or not (parent / ver).exists():
                        raise ValueError(
                            f"cannot publish {name} version {ver}: {parent / ver} already exists"
                        ) from None
                    continue  # another publisher took this number: take the next one
                return manifest
            raise ValueError(f"cannot publish {name}: no free version number in {parent}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, lowest first (empty when there are none)."""
        parent = self.root / name
        if not parent.is_dir():
            return []
        found = [
            p.name
            for p in parent.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).exists()
        ]
        return sorted(found, key=_version_key)

    def resolve(self, name: str, version: str) -> str:
        """``version`` itself if it exists; ``latest`` is the highest published version."""
        if version == "latest":
            found = self.versions(name)
            if not found:
                raise ModelLoadError(f"model {name!r} has no published version under {self.root / name}")
            return found[-1]
        path = self.path(name, version)
        if not path.is_dir():
            raise ModelLoadError(f"model {name!r} version {version!r} is missing: no {path}")
        return version

    def known_answers(self, name: str, version: str) -> Path | None:
        """The known-answer file of one version (``latest`` allowed), or None when it has none."""
        try:
            path = self.path(name, self.resolve(name, version)) / KNOWN_ANSWERS_FILE
        except ModelLoadError:
            return None
        return path if path.is_file() else None

    def manifest(self, name: str, version: str) -> ModelManifest:
        """The manifest of one version (``latest`` allowed)."""
        path = self.path(name, self.resolve(name, version)) / MANIFEST_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ModelLoadError(f"manifest is missing: {path}") from None
        except OSError as exc:
            raise ModelLoadError(f"manifest is unreadable: {path}: {exc}") from None
        try:
            return ModelManifest.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise ModelLoadError(f"manifest is unreadable: {path}: {exc}") from None

    def load(self, name: str, version: str, device: torch.device) -> LoadedModel:
        """The model in eval mode on ``device``, after its checksum has been verified."""
        manifest = self.manifest(name, version)
        path = self.path(name, manifest.version) / MODEL_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelLoadError(f"model artifact is missing: {path}") from None
        except OSError as exc:
            raise ModelLoadError(f"model artifact is unreadable: {path}: {exc}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != manifest.sha256:
            raise ModelLoadError(
                f"checksum mismatch for {path}: expected sha256 {manifest.sha256}, "
                f"actual {actual} (the artifact is corrupt or was replaced)"
            )
        try:
            model = build_model(manifest.arch)
            # The very bytes that were verified are loaded (no second read of the file),
            # and weights_only refuses pickled code.
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as exc:
            raise ModelLoadError(f"model artifact is unreadable: {path}: {exc}") from None
        model.requires_grad_(False)
        return LoadedModel(model=model.to(device).eval(), manifest=manifest)

    def ensure_defaults(
        self, heavy_width: int = HEAVY_DEFAULT_WIDTH, heavy_depth: int = HEAVY_DEFAULT_DEPTH
    ) -> list[ModelManifest]:
        """Publish ``digits`` v1 (trained) and ``heavy`` v1 (built) unless they exist.

        Idempotent and fast when present (reads two manifests). An existing version is
        never repaired: a corrupt artifact must fail the load, not be silently replaced.
        """
        out = []
        if not self.path("digits", "1").is_dir():
            model, metrics = train_digits(seed=0)
            out.append(self._publish_default("digits", model, {"kind": "digits"}, metrics,
                                             known_answers=digits_known_answers(model)))  # fmt: skip
        else:
            out.extend(self._existing("digits"))
            self._add_known_answers("digits", "1")
        if not self.path("heavy", "1").is_dir():
            arch = {"kind": "heavy", "width": heavy_width, "depth": heavy_depth, "seed": 0}
            heavy = HeavyNet(heavy_width, heavy_depth, seed=0)
            params = float(sum(p.numel() for p in heavy.parameters()))
            out.append(self._publish_default("heavy", heavy, arch, {"parameters": params}))
        else:
            out.extend(self._existing("heavy"))
        return out

    def _existing(self, name: str) -> list[ModelManifest]:
        # A broken default is reported here but only fails start-up if it is the model
        # being served (its load raises the ModelLoadError then).
        try:
            return [self.manifest(name, "1")]
        except ModelLoadError as exc:
            log.warning("default model %s v1 is broken: %s", name, exc)
            return []

    def _add_known_answers(self, name: str, version: str) -> None:
        """A digits version published before known answers existed gets its set (computed from the verified
        artifact, renamed into place whole); a broken artifact is left alone (its load fails, as it must)."""
        path = self.path(name, version)
        if (path / KNOWN_ANSWERS_FILE).exists():
            return
        try:
            loaded = self.load(name, version, torch.device("cpu"))
        except ModelLoadError:
            return
        if loaded.manifest.arch.get("kind") != "digits" or loaded.manifest.metrics.get("bad_canary"):
            return
        doc = digits_known_answers(loaded.model, name, version)
        staging = path / f".{KNOWN_ANSWERS_FILE}.{uuid.uuid4().hex}"
        try:
            _write_synced(staging, json.dumps(doc, separators=(",", ":")).encode())
            os.replace(staging, path / KNOWN_ANSWERS_FILE)
        except OSError as exc:  # a read-only registry: the load checks answers without known ones
            log.warning("cannot add known answers to %s: %s", path, exc)
        finally:
            staging.unlink(missing_ok=True)

    def _publish_default(
        self, name: str, model: nn.Module, arch: dict[str, Any], metrics: dict[str, float],
        known_answers: dict[str, Any] | None = None,
    ) -> ModelManifest:  # fmt: skip
        try:
            return self.publish(name, model, arch, metrics, version="1", known_answers=known_answers)
        except ValueError:
            # Another replica published it first (replicas may start together).
            return self.manifest(name, "1")

    def _next_version(self, name: str) -> str:
        numeric = [int(v) for v in self.versions(name) if v.isdigit()]
        return str(max(numeric, default=0) + 1)


def _check_name(what: str, value: str) -> None:
    if not value or value in (".", "..", "latest") or "/" in value or value.startswith("."):
        raise ValueError(f"invalid {what} {value!r}")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
