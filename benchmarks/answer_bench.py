"""Micro-benchmark of the bundled load's answer check: what checking every answer costs per request.

The bundled locustfile (``target_service/locustfile.py``) parses each 2xx answer (orjson) and judges its outputs
(``target_service/answers.check_outputs``): every answer for its form (data that fills its shape, numbers only,
all finite, the shape the known answers give), and every 4th one — a known request — for its class and values.
This times, on real digits answers built from the published known answers (``digits_known_answers``):

* the parse alone;
* a plain answer (parse + form);
* a known answer (parse + form + class + values);
* the load's mix (3 plain : 1 known), the figure ``docs/load.md`` states;
* a NaN answer (the erroring canary's: JSON ``null``), found wrong.

Best of 5 repeats of 100,000 calls each (the machine is shared: the minimum is the cost, the rest is noise).
Nothing is asserted. Run: ``.venv/bin/python benchmarks/answer_bench.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import orjson

from faultdrill.target_service.answers import check_outputs, parse
from faultdrill.target_service.models import digits_known_answers, train_digits

_N, _REPEATS = 100_000, 5


def _best_us(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(_REPEATS):
        start = time.perf_counter()
        for _ in range(_N):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / _N * 1e6


def main() -> None:
    model, _ = train_digits(seed=0)
    known = parse(json.loads(json.dumps(digits_known_answers(model))))
    expected = known.answers[0]
    data = list(expected.outputs[0][2] or ())
    body = json.dumps({"model_name": "digits", "model_version": "1", "id": "42", "parameters": {},
                       "outputs": [{"name": "probabilities", "shape": [1, 10], "datatype": "FP32",
                                    "data": data}]}).encode()  # fmt: skip
    nan_body = body.replace(json.dumps(data).encode(), json.dumps([None] * 10).encode())
    shapes = {"probabilities": (1, 10)}
    assert check_outputs(orjson.loads(body)["outputs"], shapes, expected) is None
    assert check_outputs(orjson.loads(nan_body)["outputs"], shapes, None) is not None
    parse_us = _best_us(lambda: orjson.loads(body))
    plain_us = _best_us(lambda: check_outputs(orjson.loads(body)["outputs"], shapes, None))
    known_us = _best_us(lambda: check_outputs(orjson.loads(body)["outputs"], shapes, expected))
    nan_us = _best_us(lambda: check_outputs(orjson.loads(nan_body)["outputs"], shapes, None))
    print(f"answer body: {len(body)} bytes")
    print(f"parse only      {parse_us:6.2f} µs")
    print(f"plain answer    {plain_us:6.2f} µs")
    print(f"known answer    {known_us:6.2f} µs")
    print(f"load's mix 3:1  {(3 * plain_us + known_us) / 4:6.2f} µs per request")
    print(f"NaN answer      {nan_us:6.2f} µs (wrong)")
    for rate in (1_500, 3_000):
        print(f"at {rate:,} req/s: {(3 * plain_us + known_us) / 4 * rate / 1e4:.2f} % of one core")


if __name__ == "__main__":
    main()
