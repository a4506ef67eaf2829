"""The target's models: deterministic digits training, heavy-model knobs, example rows."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from faultdrill.target_service.models import (
    HEAVY_DEFAULT_DEPTH,
    HEAVY_DEFAULT_WIDTH,
    DigitsNet,
    HeavyNet,
    build_model,
    example_inputs,
    load_digits_data,
    train_digits,
)


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, dict[str, float], float]:
    load_digits_data(0)  # the scikit-learn import is not training time
    started = time.perf_counter()
    model, metrics = train_digits(seed=0)
    return model, metrics, time.perf_counter() - started


def test_digits_data_is_scaled_stratified_and_deterministic() -> None:
    data = load_digits_data(0)
    assert data.X_train.dtype == np.float32 and data.X_train.shape[1] == 64
    assert len(data.X_train) + len(data.X_test) == 1797
    assert data.X_train.min() >= 0.0 and data.X_train.max() <= 1.0
    # Stratified: every class is in the test split in about its share (~45 of 450).
    counts = np.bincount(data.y_test, minlength=10)
    assert counts.min() >= 40 and counts.max() <= 50
    again = load_digits_data(0)
    assert np.array_equal(data.X_test, again.X_test)
    assert not np.array_equal(load_digits_data(1).y_test, data.y_test)


def test_training_is_accurate_and_fast(trained: tuple[torch.nn.Module, dict, float]) -> None:
    model, metrics, seconds = trained
    assert metrics["accuracy"] >= 0.95, metrics
    assert seconds < 5.0
    assert not model.training
    assert isinstance(model, DigitsNet)


def test_training_is_bit_for_bit_deterministic(trained: tuple[torch.nn.Module, dict, float]) -> None:
    first = trained[0].state_dict()
    threads = torch.get_num_threads()
    second, metrics = train_digits(seed=0)
    assert torch.get_num_threads() == threads  # restored for the serving path
    for key, value in second.state_dict().items():
        assert torch.equal(first[key], value), key
    assert metrics["accuracy"] == trained[1]["accuracy"]


def test_training_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    HeavyNet(16, 2, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_heavy_knobs_shape_the_network() -> None:
    net = HeavyNet(width=32, depth=3)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (64, 32),
        (32, 32),
        (32, 32),
        (32, 10),
    ]
    assert net(torch.zeros(5, 64)).shape == (5, 10)
    params = sum(p.numel() for p in HeavyNet(width=128, depth=4).parameters())
    assert params == 64 * 128 + 128 + 3 * (128 * 128 + 128) + 128 * 10 + 10


def test_heavy_init_is_seeded() -> None:
    a, b, c = HeavyNet(48, 2, seed=1), HeavyNet(48, 2, seed=1), HeavyNet(48, 2, seed=2)
    for (key, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True):
        assert torch.equal(va, vb), key
        assert not torch.equal(va, vc), key


def test_heavy_rejects_nonsense_knobs() -> None:
    with pytest.raises(ValueError, match="width >= 1"):
        HeavyNet(0, 2)


def test_build_model_by_kind() -> None:
    assert isinstance(build_model({"kind": "digits"}), DigitsNet)
    heavy = build_model({"kind": "heavy", "width": 16, "depth": 2})
    assert isinstance(heavy, HeavyNet) and (heavy.width, heavy.depth) == (16, 2)
    default = build_model({"kind": "heavy"})
    assert isinstance(default, HeavyNet)
    assert (default.width, default.depth) == (HEAVY_DEFAULT_WIDTH, HEAVY_DEFAULT_DEPTH)
    with pytest.raises(ValueError, match="unknown model kind 'resnet'"):
        build_model({"kind": "resnet"})


def test_example_inputs_are_real_rows(trained: tuple[torch.nn.Module, dict, float]) -> None:
    rows = example_inputs(600, seed=3)
    assert rows.shape == (600, 64) and rows.dtype == np.float32 and rows.flags.writeable
    assert np.array_equal(rows, example_inputs(600, seed=3))
    assert rows.sum(axis=1).min() > 0  # real digits, not zeros
    with torch.inference_mode():
        confidence = torch.softmax(trained[0](torch.from_numpy(rows[:50])), dim=1).max(dim=1)
    assert float(confidence.values.mean()) > 0.8
    with pytest.raises(ValueError):
        example_inputs(0)


def test_digits_are_exactly_scikit_learns() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = load_digits_data(0)
    rows = np.concatenate([data.X_train, data.X_test])
    labels = np.concatenate([data.y_train, data.y_test])
    order = np.lexsort(rows.T)
    expected_order = np.lexsort((bunch.data / 16.0).astype(np.float32).T)
    assert np.array_equal(rows[order], (bunch.data / 16.0).astype(np.float32)[expected_order])
    assert np.array_equal(np.bincount(labels), np.bincount(bunch.target))
