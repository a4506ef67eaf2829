"""Deep health: the probes ask whether the worker can still *compute*, and compute right.

A process whose HTTP server answers is not a healthy replica: a poisoned CUDA context (the zombie) fails every
inference while ``/v2/health/live`` answers 200, and a GPU that corrupts data answers 200 with wrong outputs.
So the inference worker runs a **compute check** between batches, every ``health_check_interval_s`` (and at once
after a batch fails, again 0.1 s after a check fails): one forward pass of a fixed input set, through the same
device and code path as requests.

* The pass raises (not out of memory: that has its own cool-down) → a **compute error**. After
  ``health_failure_threshold`` in a row, readiness is false *and* liveness is false: nothing but a new process
  brings a poisoned context back, so the platform must restart the replica.
* The pass answers, but a known answer's class (the model version's ``known_answers.json``) does not hold, or an
  output is not finite → **wrong answers**. The probabilities' tolerance is not judged here: a less confident
  version is a calibration change for the canary analysis, not a broken replica. After the same
  threshold readiness is false (out of rotation), liveness holds: a restart reloads the weights, but silent
  corruption is a hardware fault a person must look at (drain, reset or replace the GPU).
* A model without known answers is checked for shape and finiteness only.

The ``shallow_health`` misconfiguration keeps running the check (its metrics stay) but the probes ignore it:
the zombie stays in rotation, never restarted.

Example::

    >>> import numpy as np
    >>> check = ComputeCheck(np.zeros((2, 3), np.float32), classes=np.array([0, 1]), probs=None, atol=0.2)
    >>> check.judge(np.array([[9.0, 0.0], [0.0, 9.0]], np.float32)).kind
    'ok'
    >>> check.judge(np.array([[0.0, 9.0], [0.0, 9.0]], np.float32)).reason
    '1 of 2 known answers wrong'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .answers import KnownAnswerError, read

__all__ = ["ComputeCheck", "HealthVerdict"]

log = logging.getLogger("target.health")


@dataclass(frozen=True)
class HealthVerdict:
    kind: Literal["ok", "compute_error", "wrong_answers"]
    reason: str


class ComputeCheck:
    """A fixed input batch and what a correct model answers to it (``classes``/``probs``: None when unknown)."""

    def __init__(self, inputs: np.ndarray, *, classes: np.ndarray | None, probs: np.ndarray | None,
                 atol: float) -> None:  # fmt: skip
        self.inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        self.classes, self.probs, self.atol = classes, probs, atol

    @classmethod
    def for_model(cls, known_answers: Path | None, input_width: int) -> ComputeCheck:
        """From a version's known-answer file (one row per answer, first input tensor), else 4 rows of zeros
        checked for shape and finiteness only."""
        if known_answers is not None:
            try:
                ka = read(str(known_answers))
                rows = [np.asarray(a.inputs[0]["data"], dtype=np.float32).reshape(-1, input_width)
                        for a in ka.answers]  # fmt: skip
                classes = [a.cls for a in ka.answers]
                probs = [a.outputs[0][2] if a.outputs else None for a in ka.answers]
                inputs = np.concatenate(rows)
                if all(c is not None and len(c) == len(r) for c, r in zip(classes, rows, strict=True)) and all(
                        p is not None for p in probs):  # fmt: skip
                    return cls(inputs, classes=np.concatenate([np.asarray(c) for c in classes if c is not None]),
                               probs=np.concatenate([np.asarray(p, dtype=np.float64).reshape(len(r), -1)
                                                     for p, r in zip(probs, rows, strict=True) if p is not None]),
                               atol=ka.answers[0].atol)  # fmt: skip
            except (KnownAnswerError, ValueError) as exc:
                log.warning("known answers unusable for the compute check (%s): checking shape and finiteness", exc)
        return cls(np.zeros((4, input_width), dtype=np.float32), classes=None, probs=None, atol=0.0)

    def judge(self, logits: np.ndarray) -> HealthVerdict:
        """The verdict on the model's logits for :attr:`inputs`."""
        n = self.inputs.shape[0]
        if logits.ndim != 2 or logits.shape[0] != n:
            return HealthVerdict("wrong_answers", f"output shape {list(logits.shape)} for {n} rows")
        finite = np.isfinite(logits).all(axis=1)
        wrong = ~finite
        if self.classes is not None:
            wrong |= logits.argmax(axis=1) != self.classes
        # Class and finiteness only, not the probabilities' tolerance: a calibration change (a less confident
        # version) is the canary analysis's to judge; readiness takes out a replica whose answers are wrong.
        bad = int(wrong.sum())
        if bad == 0:
            return HealthVerdict("ok", "ok")
        what = "known answers" if self.classes is not None else "check rows"
        extra = f" ({int((~finite).sum())} not finite)" if not finite.all() else ""
        return HealthVerdict("wrong_answers", f"{bad} of {n} {what} wrong{extra}")
