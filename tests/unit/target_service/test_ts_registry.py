"""The model registry: versioned artifacts, checksums verified before loading."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import torch

from faultdrill.target_service.models import DigitsNet, HeavyNet, example_inputs, train_digits
from faultdrill.target_service.registry import ModelLoadError, ModelManifest, ModelRegistry

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, dict[str, float]]:
    return train_digits(seed=0)


def _publish(reg: ModelRegistry, version: str | None = None) -> ModelManifest:
    return reg.publish("tiny", HeavyNet(8, 1), {"kind": "heavy", "width": 8, "depth": 1}, {},
                       version=version)  # fmt: skip


def test_publish_writes_artifact_and_manifest(tmp_path: Path, digits) -> None:
    model, metrics = digits
    reg = ModelRegistry(tmp_path)
    manifest = reg.publish("digits", model, {"kind": "digits"}, metrics)
    version_dir = tmp_path / "digits" / "1"
    assert sorted(p.name for p in version_dir.iterdir()) == ["manifest.json", "model.pt"]
    assert manifest.version == "1"
    assert manifest.sha256 == hashlib.sha256((version_dir / "model.pt").read_bytes()).hexdigest()
    on_disk = json.loads((version_dir / "manifest.json").read_text())
    assert ModelManifest.model_validate(on_disk) == manifest
    assert manifest.inputs[0].model_dump() == {"name": "input", "datatype": "FP32",
                                               "shape": [-1, 64]}  # fmt: skip
    assert manifest.outputs[0].name == "probabilities"
    assert manifest.torch_version == torch.__version__
    assert manifest.metrics["accuracy"] >= 0.95
    assert not [p for p in (tmp_path / "digits").iterdir() if p.name.startswith(".")]


def test_same_training_gives_the_same_checksum(tmp_path: Path, digits) -> None:
    reg = ModelRegistry(tmp_path)
    first = reg.publish("digits", digits[0], {"kind": "digits"}, digits[1])
    again, metrics = train_digits(seed=0)
    second = reg.publish("digits", again, {"kind": "digits"}, metrics)
    assert (first.version, second.version) == ("1", "2")
    assert first.sha256 == second.sha256


def test_load_roundtrip_gives_the_same_predictions(tmp_path: Path, digits) -> None:
    model, metrics = digits
    reg = ModelRegistry(tmp_path)
    reg.publish("digits", model, {"kind": "digits"}, metrics)
    loaded = reg.load("digits", "1", CPU)
    assert isinstance(loaded.model, DigitsNet) and not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())
    x = torch.from_numpy(example_inputs(20))
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.manifest == reg.manifest("digits", "1")


def test_versions_sort_numerically_and_latest_is_highest(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    assert reg.versions("tiny") == []
    for _ in range(10):
        _publish(reg)
    _publish(reg, version="canary")
    assert reg.versions("tiny") == ["canary", *[str(i) for i in range(1, 11)]]
    assert reg.resolve("tiny", "latest") == "10"
    assert reg.resolve("tiny", "3") == "3"
    assert reg.load("tiny", "latest", CPU).manifest.version == "10"
    assert _publish(reg).version == "11"


def test_explicit_version_never_overwrites(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    first = _publish(reg, version="7")
    with pytest.raises(ValueError, match="already exists"):
        _publish(reg, version="7")
    assert reg.manifest("tiny", "7") == first
    with pytest.raises(ValueError, match="invalid version"):
        _publish(reg, version="../evil")


def test_corrupt_artifact_fails_with_a_checksum_mismatch(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    manifest = _publish(reg)
    artifact = tmp_path / "tiny" / "1" / "model.pt"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte
    artifact.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ModelLoadError) as err:
        reg.load("tiny", "1", CPU)
    message = str(err.value)
    assert "checksum mismatch" in message and str(artifact) in message
    assert manifest.sha256 in message and actual in message


def test_missing_version_artifact_and_model(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ModelLoadError, match="no published version"):
        reg.load("tiny", "latest", CPU)
    _publish(reg)
    with pytest.raises(ModelLoadError, match="missing") as err:
        reg.load("tiny", "2", CPU)
    assert str(tmp_path / "tiny" / "2") in str(err.value)
    (tmp_path / "tiny" / "1" / "model.pt").unlink()
    with pytest.raises(ModelLoadError, match="artifact is missing") as err:
        reg.load("tiny", "1", CPU)
    assert str(tmp_path / "tiny" / "1" / "model.pt") in str(err.value)


def test_unreadable_manifest_and_weights(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    _publish(reg)
    _publish(reg)
    (tmp_path / "tiny" / "1" / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="manifest is unreadable"):
        reg.load("tiny", "1", CPU)
    # Valid checksum of bytes that are not a state_dict of this architecture.
    v2 = tmp_path / "tiny" / "2"
    junk = b"definitely not a torch zip file"
    (v2 / "model.pt").write_bytes(junk)
    doc = json.loads((v2 / "manifest.json").read_text())
    doc["sha256"] = hashlib.sha256(junk).hexdigest()
    (v2 / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="artifact is unreadable"):
        reg.load("tiny", "2", CPU)


def test_manifest_forbids_unknown_fields(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    _publish(reg)
    path = tmp_path / "tiny" / "1" / "manifest.json"
    doc = json.loads(path.read_text())
    doc["surprise"] = 1
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="surprise"):
        reg.manifest("tiny", "1")


def test_ensure_defaults_is_idempotent_and_fast(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    first = reg.ensure_defaults(heavy_width=32, heavy_depth=2)
    assert [(m.name, m.version) for m in first] == [("digits", "1"), ("heavy", "1")]
    assert first[0].metrics["accuracy"] >= 0.95
    assert first[1].arch == {"kind": "heavy", "width": 32, "depth": 2, "seed": 0}
    mtime = (tmp_path / "digits" / "1" / "model.pt").stat().st_mtime_ns
    started = time.perf_counter()
    second = reg.ensure_defaults(heavy_width=32, heavy_depth=2)
    assert time.perf_counter() - started < 0.5
    assert second == first
    assert (tmp_path / "digits" / "1" / "model.pt").stat().st_mtime_ns == mtime
    heavy = reg.load("heavy", "1", CPU).model
    assert isinstance(heavy, HeavyNet) and (heavy.width, heavy.depth) == (32, 2)


def test_ensure_defaults_never_repairs_a_broken_default(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.ensure_defaults(heavy_width=16, heavy_depth=1)
    (tmp_path / "heavy" / "1" / "manifest.json").write_text("garbage")
    manifests = reg.ensure_defaults(heavy_width=16, heavy_depth=1)
    assert [m.name for m in manifests] == ["digits"]
    assert (tmp_path / "heavy" / "1" / "manifest.json").read_text() == "garbage"
    with pytest.raises(ModelLoadError):
        reg.load("heavy", "1", CPU)


def test_trained_digits_publish_known_answers_a_correct_replica_meets(tmp_path: Path, digits) -> None:
    from faultdrill.target_service.answers import check_outputs, read
    from faultdrill.target_service.models import digits_known_answers

    model, metrics = digits
    reg = ModelRegistry(tmp_path)
    reg.publish("digits", model, {"kind": "digits"}, metrics, known_answers=digits_known_answers(model))
    path = reg.known_answers("digits", "latest")
    assert path == tmp_path / "digits" / "1" / "known_answers.json"
    known = read(str(path))
    assert (known.model, known.version, len(known.answers)) == ("digits", "1", 32)
    retrained, _ = train_digits(seed=2)  # another version of the same model meets them too (the canary's)
    for net in (reg.load("digits", "1", CPU).model, retrained):
        for e in known.answers:
            with torch.inference_mode():
                probs = torch.softmax(net(torch.tensor([e.inputs[0]["data"]])), dim=1)[0].tolist()
            out = [{"name": "probabilities", "shape": [1, 10], "datatype": "FP32", "data": probs}]
            assert check_outputs(out, {"probabilities": (1, 10)}, e) is None
    assert reg.known_answers("digits", "9") is None and reg.known_answers("tiny", "1") is None


def test_ensure_defaults_adds_known_answers_to_a_digits_published_without_them(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.ensure_defaults(heavy_width=8, heavy_depth=1)
    path = tmp_path / "digits" / "1" / "known_answers.json"
    first = path.read_bytes()
    path.unlink()
    reg.ensure_defaults(heavy_width=8, heavy_depth=1)  # an older cache: the set is added, the artifact untouched
    assert path.read_bytes() == first and reg.known_answers("heavy", "1") is None
