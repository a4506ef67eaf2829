"""``load.protocol`` in the spec: the four kinds, located errors, and payload files read and checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faultdrill.experiments.observe.protocols import Runtime, client_of, prepare
from faultdrill.experiments.spec.experiment import LoadSpec
from faultdrill.experiments.spec.load import HttpProtocol, KServeV1Protocol, OipV2Protocol, json_path_parts
from faultdrill.experiments.spec.loader import check_experiment_text, load_experiment_text
from faultdrill.faults.errors import ConfigError

SPEC = """apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: protocols}
load:
  users: 2
  protocol: %s
faults: []
expect: []
"""


def _errors(protocol: str) -> list[str]:
    return [str(e) for e in check_experiment_text(SPEC % protocol, file="e.yaml")]


def test_absent_protocol_is_todays_load() -> None:
    assert LoadSpec().protocol is None
    assert load_experiment_text(SPEC.replace("  protocol: %s\n", "")).load.protocol is None


@pytest.mark.parametrize("protocol, kind", [
    ("{kind: oip_v2, model: digits}", "oip_v2"),
    ("{kind: oip_v2, model: digits, version: '2', inputs: {file: in.json}, binary: true}", "oip_v2"),
    ("{kind: openai, model: meta-llama/Llama-3.1-8B, prompt: hi, stream: true}", "openai"),
    ("{kind: openai, api: chat, model: m, messages: [{role: system, content: be brief}, {role: user, content: hi}]}",
     "openai"),
    ("{kind: openai, api: completions, model: m, prompt: once upon, max_tokens: 4}", "openai"),
    ("{kind: kserve_v1, model: iris, instances_file: iris.json}", "kserve_v1"),
    ("{kind: http, method: get, path: '/health?full=1', success: {status: [200, 204], json_path: '$.a[0].b'}}",
     "http"),
    ("{kind: http, path: /predict, headers: {X-Api-Key: k}, body: {x: [1, 2]}}", "http"),
])  # fmt: skip
def test_each_kind_loads(protocol: str, kind: str) -> None:
    assert _errors(protocol) == []
    loaded = load_experiment_text(SPEC % protocol).load.protocol
    assert loaded is not None and loaded.kind == kind


@pytest.mark.parametrize("protocol, located", [
    ("{kind: opnai, model: x, prompt: hi}",
     "e.yaml:6:13: load.protocol: unknown value 'opnai' (expected 'oip_v2', 'openai', 'kserve_v1', 'http') "
     "(did you mean 'openai'?)"),
    ("{kind: oip_v2, model: digits, inputs: genrated}",
     "e.yaml:6:51: load.protocol.inputs: expected generated or {file: PATH}, got 'genrated'"),
    ("{kind: openai, model: x}", "e.yaml:6:13: load.protocol: give exactly one of prompt or messages"),
    ("{kind: openai, api: completions, model: x, messages: [{role: user, content: a}]}",
     "e.yaml:6:13: load.protocol: api completions takes a prompt, not messages (messages are for api: chat)"),
    ("{kind: http, path: predict}",
     "e.yaml:6:32: load.protocol.path: expected a path that starts with / (no spaces), e.g. /predict, got 'predict'"),
    ("{kind: kserve_v1, model: a/b, instances_file: x.json}",
     "e.yaml:6:38: load.protocol.model: expected a model name that is one URL path segment (no /, ?, #, %, spaces "
     "or control characters), got 'a/b'"),
    ("{kind: http, path: /x, success: {json_path: 'a..b'}}",
     "e.yaml:6:57: load.protocol.success.json_path: not a JSON path like $.outputs[0].data: 'a..b'"),
    ("{kind: http, path: /x, headrs: {}}",
     "e.yaml:6:36: load.protocol.headrs: unknown key 'headrs' (expected one of kind, method, path, headers, body, "
     "success) (did you mean 'headers'?)"),
])  # fmt: skip
def test_bad_protocols_are_located(protocol: str, located: str) -> None:
    assert _errors(protocol) == [located]


def test_json_paths() -> None:
    assert json_path_parts("$.choices[0].text") == json_path_parts("choices[0].text") == ("choices", 0, "text")
    assert json_path_parts("$") == () and json_path_parts("$[1].a") == (1, "a")
    for bad in ("", ".a", "$a", "a.", "a..b", "a[x]", "a b", "a[0]b"):
        with pytest.raises(ValueError, match="not a JSON path"):
            json_path_parts(bad)


# -- payload files: read and checked when the load is built -----------------------------------
def _oip(file: str, binary: bool = False) -> OipV2Protocol:
    return OipV2Protocol.model_validate({"kind": "oip_v2", "model": "digits", "inputs": {"file": file},
                                         "binary": binary})  # fmt: skip


def test_an_inputs_file_becomes_the_runtime_payloads(tmp_path: Path) -> None:
    one = {"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "two.json").write_text(json.dumps([one, one]))
    runtime = prepare(_oip("one.json"), tmp_path)
    assert runtime.payloads == [one]
    assert prepare(_oip(str(tmp_path / "two.json")), Path("/")).payloads == [one, one]  # absolute paths as they are
    # What the Locust processes read back is the same runtime, and gives a ready client (no metadata needed).
    (tmp_path / "rt.json").write_text(runtime.model_dump_json())
    assert Runtime.read(tmp_path / "rt.json") == runtime
    client = client_of(runtime)
    assert client.ready and client.call(0).path == "/v2/models/digits/infer"


@pytest.mark.parametrize("content, located", [
    ('{"inputs": [', "in.json:1:13: not JSON: Expecting value (expected a JSON payload)"),
    ("[]", "in.json: the file holds no request (expected an OIP v2 request {\"inputs\": [...]} or a list of them)"),
    ('{"inputs": []}', "in.json: inputs: no inputs (expected a non-empty list of OIP v2 input tensors)"),
    ('[{"inputs": [{"name": "x", "shape": [2], "datatype": "FP33", "data": [1, 2]}]}]',
     "in.json: [0].inputs[0].datatype: 'FP33' is not an OIP v2 datatype (expected one of BOOL, UINT8, UINT16, "
     "UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BF16, BYTES)"),
    ('{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]}',
     "in.json: inputs[0].data: 3 elements do not fill shape [2, 2] (4) (expected as many elements as the shape holds)"),
    ('{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
     "in.json: inputs[0].shape: shape [-1] is not a list of sizes (expected non-negative integers)"),
])  # fmt: skip
def test_bad_inputs_files_are_located(tmp_path: Path, content: str, located: str) -> None:
    (tmp_path / "in.json").write_text(content)
    with pytest.raises(ConfigError) as caught:
        prepare(_oip("in.json"), tmp_path)
    assert str(caught.value).replace(str(tmp_path) + "/", "") == located


def test_a_missing_payload_file_names_its_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"load.protocol.instances_file: cannot read .*nope.json: No such file"):
        prepare(KServeV1Protocol(kind="kserve_v1", model="iris", instances_file="nope.json"), tmp_path)
    (tmp_path / "deep.json").write_text("[" * 100_000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        prepare(_oip("deep.json"), tmp_path)


def test_kserve_instances_file_as_list_or_request(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[[1, 2], [3, 4]]")
    (tmp_path / "req.json").write_text('{"instances": [[1, 2]], "signature_name": "serving_default"}')
    (tmp_path / "none.json").write_text('{"instances": []}')
    spec = KServeV1Protocol(kind="kserve_v1", model="iris", instances_file="list.json")
    assert prepare(spec, tmp_path).payloads == [{"instances": [[1, 2], [3, 4]]}]
    req = prepare(spec.model_copy(update={"instances_file": "req.json"}), tmp_path)
    assert req.payloads == [{"instances": [[1, 2]], "signature_name": "serving_default"}]
    with pytest.raises(ConfigError, match="no instances"):
        prepare(spec.model_copy(update={"instances_file": "none.json"}), tmp_path)


def test_http_body_as_json_or_text() -> None:
    as_json = client_of(Runtime(protocol=HttpProtocol(kind="http", path="/p?q=1", body={"x": [1]}))).call(0)
    assert (as_json.method, as_json.path, as_json.name, as_json.body) == ("POST", "/p?q=1", "/p", b'{"x":[1]}')
    assert as_json.headers == {"Content-Type": "application/json"}
    text = HttpProtocol(kind="http", method="put", path="/p", body="a=1", headers={"content-type": "text/plain"})
    call = client_of(Runtime(protocol=text)).call(0)
    assert (call.method, call.body, call.headers) == ("PUT", b"a=1", {"content-type": "text/plain"})


def test_the_generator_of_a_spec_carries_its_protocol(tmp_path: Path) -> None:
    from faultdrill.experiments.journal.timeline import Timeline
    from faultdrill.experiments.observe.load import LoadGenerator, LoadShape, locustfile_path, protocol_locustfile_path

    (tmp_path / "iris.json").write_text("[[1, 2]]")
    spec = load_experiment_text(SPEC % "{kind: kserve_v1, model: iris, instances_file: iris.json}").load
    gen = LoadGenerator.of_spec("http://127.0.0.1:1", Timeline(), tmp_path / "load", spec, shape=LoadShape(),
                                run_time=5, model="digits", base_dir=tmp_path)  # fmt: skip
    assert gen.users == 2 and gen.protocol is not None and gen.protocol.payloads == [{"instances": [[1, 2]]}]
    bundled = LoadGenerator.of_spec("http://127.0.0.1:1", Timeline(), tmp_path, LoadSpec(), shape=LoadShape(),
                                    run_time=5, model="digits")  # fmt: skip
    assert bundled.protocol is None  # today's request, today's locustfile
    assert protocol_locustfile_path().parent.name == "observe" and locustfile_path().name == "locustfile.py"
    with pytest.raises(ConfigError, match="instances_file: cannot read"):  # a bad file: before any process starts
        LoadGenerator.of_spec("http://127.0.0.1:1", Timeline(), tmp_path, spec, shape=LoadShape(), run_time=5,
                              model="digits", base_dir=tmp_path / "elsewhere")  # fmt: skip
