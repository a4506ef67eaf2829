"""Train the examples' digits model into a folder: scikit-learn's digits (8x8 pixels -> 10 classes), deterministic.

Each server's venv runs this once at `make server-<name>` (the artifact is not committed: a pickle is tied to
the scikit-learn version that wrote it, and each server venv pins its own)::

    .faultdrill/servers/mlserver/venv/bin/python experiments/examples/train_digits.py \
        experiments/examples/mlserver/models/digits

It writes ``model.joblib`` there: a one-hidden-layer MLP (64 units, ``random_state=0``) fitted on the first
1,500 rows of ``sklearn.datasets.load_digits`` scaled to [0, 1]; the 297 rows left are the held-out check. Inputs
are 64 float pixels in [0, 1]; the output is the class (0-9). Run twice, it writes the same model (same
scikit-learn, same BLAS). Only scikit-learn and joblib: no torch, nothing downloaded (the data set ships with
scikit-learn).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import joblib
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier


def main(folder: Path) -> None:
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    model = MLPClassifier(hidden_layer_sizes=(64,), random_state=0, max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x[:1500], y[:1500])
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.joblib.tmp"
    joblib.dump(model, tmp)
    tmp.replace(folder / "model.joblib")  # never a half-written artifact in the repository
    print(f"trained digits into {folder / 'model.joblib'}: held-out accuracy {model.score(x[1500:], y[1500:]):.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: train_digits.py FOLDER")
    main(Path(sys.argv[1]))
