"""The Open Inference Protocol v2 binary tensor data extension: the framing of an infer body.

With binary tensors, an HTTP body is the JSON inference header, its length in bytes in the
``Inference-Header-Content-Length`` HTTP header, followed by each binary tensor's bytes in the
order the tensors appear in the JSON; a tensor's ``parameters.binary_data_size`` is its byte
count. Elements are little-endian, row-major, without padding, each in its datatype's native size
(BOOL: one byte, 0 or 1); a BYTES element is a 4-byte little-endian unsigned length and then its
bytes. A request asks for binary outputs with ``parameters.binary_data`` on an output, or for all
of them with the request's ``parameters.binary_data_output``. Spec: Triton's
``docs/protocol/extension_binary_data.md``; KServe's OIP v2 docs say the same.

Hand-written on purpose: the framing is a split at an offset and a few size checks, and the
maintained implementations each come inside a whole client or server stack — ``tritonclient``
(client side, on gevent) and ``kserve`` (a FastAPI model server that brings grpcio and pandas and
pins psutil and python-dateutil below what this project installs) — not as a parser a server can
import alone. numpy converts the elements.

Every inconsistency is a :class:`BinaryDataError` naming the tensor and the sizes involved. No
size a client declares is used to allocate anything before it is checked against the bytes that
actually arrived, and those are bounded by the server's request-size limit before they get here.

Example::

    >>> import numpy as np
    >>> header = b'{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}}]}'
    >>> body = header + np.array([7, -1], "<i4").tobytes()
    >>> json_part, tail = split_body(body, str(len(header)))
    >>> read_binary_inputs([{"name": "x", "shape": [2], "datatype": "INT32",
    ...                      "parameters": {"binary_data_size": 8}}], tail)[0].tolist()
    [7, -1]
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

__all__ = [
    "BYTES",
    "DATATYPES",
    "HEADER",
    "BinaryDataError",
    "binary_data_size",
    "decode_tensor",
    "encode_tensor",
    "frame",
    "read_binary_inputs",
    "split_body",
]

HEADER = "inference-header-content-length"
"""The HTTP header giving the JSON part's length (lower case, as ASGI hands headers over)."""

BYTES = "BYTES"
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("u1"),  # checked to be 0 or 1, then viewed as bool
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),  # no numpy bfloat16: the upper half of an FP32, widened on decode
}
"""The fixed-size OIP datatypes and their little-endian wire layout (BYTES is variable-size)."""

_LENGTH = struct.Struct("<I")
_MAX_HEADER_DIGITS = 19  # int64 on the wire; also keeps int() away from Python's digit limit


class BinaryDataError(ValueError):
    """The body's framing and its JSON header disagree; the message says where and by how much."""


def split_body(body: bytes, header_length: str) -> tuple[memoryview, memoryview]:
    """``(JSON header, binary tensor data)`` of ``body`` (zero-copy views), per the header's value."""
    value = header_length.strip()
    if not value.isascii() or not value.isdigit() or len(value) > _MAX_HEADER_DIGITS:
        shown = value if len(value) <= 32 else value[:31] + "…"
        raise BinaryDataError(f"Inference-Header-Content-Length must be a number of bytes, got {shown!r}")
    length = int(value)
    if length > len(body):
        raise BinaryDataError(
            f"Inference-Header-Content-Length is {length} bytes but the whole body is {len(body)} bytes"
        )
    view = memoryview(body)
    return view[:length], view[length:]


def binary_data_size(tensor: Any, label: str) -> int | None:
    """``parameters.binary_data_size`` of a request tensor; None when it is sent as JSON ``data``."""
    params = tensor.get("parameters") if isinstance(tensor, dict) else None
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BinaryDataError(f"{label}: parameters.binary_data_size must be a non-negative integer, got {size!r}")
    if "data" in tensor:
        raise BinaryDataError(f"{label}: both 'data' and parameters.binary_data_size given; send one or the other")
    return size


def _shape(tensor: dict[str, Any], label: str) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):  # fmt: skip
        raise BinaryDataError(f"{label}: shape must be a list of non-negative integers, got {shape!r}")
    return shape


def _label(tensor: Any, index: int) -> str:
    name = tensor.get("name") if isinstance(tensor, dict) else None
    return f"input {name!r}" if isinstance(name, str) else f"inputs[{index}]"


def read_binary_inputs(inputs: list[Any], data: memoryview | bytes) -> list[np.ndarray | None]:
    """Each input's binary tensor, in order (None for one sent as JSON ``data``).

    ``data`` is the body after the JSON header; together the binary tensors must cover it exactly.
    Fixed-size tensors come back as read-only little-endian views of ``data`` (no copy), BYTES
    tensors as object arrays of ``bytes``.
    """
    view = memoryview(data)
    offset = 0
    arrays: list[np.ndarray | None] = []
    for index, tensor in enumerate(inputs):
        label = _label(tensor, index)
        size = binary_data_size(tensor, label)
        if size is None:
            arrays.append(None)
            continue
        left = len(view) - offset
        if size > left:
            raise BinaryDataError(
                f"{label}: binary_data_size is {size} bytes but only {left} bytes of binary data are left in the body"
            )
        arrays.append(decode_tensor(view[offset:offset + size], tensor.get("datatype"), _shape(tensor, label), label))
        offset += size
    if offset != len(view):
        raise BinaryDataError(
            f"{len(view) - offset} unexpected bytes after the binary tensor data: the inputs' binary_data_size "
            f"values add up to {offset} of the {len(view)} bytes that follow the JSON header"
        )
    return arrays


def decode_tensor(chunk: memoryview | bytes, datatype: Any, shape: list[int], label: str = "tensor") -> np.ndarray:
    """One tensor's bytes as an array of ``shape``; the byte count must be exactly what they need."""
    count = math.prod(shape)
    if datatype == BYTES:
        return _decode_bytes(memoryview(chunk), count, label).reshape(shape)
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BinaryDataError(f"{label}: datatype {datatype!r} is not an OIP v2 datatype")
    need = count * dtype.itemsize
    if len(chunk) != need:
        raise BinaryDataError(
            f"{label}: binary_data_size is {len(chunk)} bytes but shape {shape} of {datatype} needs {need}"
        )
    array = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    if datatype == "BOOL":
        if array.size and int(array.max()) > 1:
            raise BinaryDataError(f"{label}: a BOOL element must be the byte 0 or 1")
        return array.view(np.bool_)
    if datatype == "BF16":
        return (array.astype("<u4") << 16).view("<f4")
    return array


def _decode_bytes(view: memoryview, count: int, label: str) -> np.ndarray:
    if count * _LENGTH.size > len(view):  # every element costs at least its 4-byte length
        raise BinaryDataError(f"{label}: {count} BYTES elements need at least {count * _LENGTH.size} bytes, "
                              f"binary_data_size is {len(view)}")  # fmt: skip
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += _LENGTH.size
        if length > len(view) - pos:
            raise BinaryDataError(f"{label}: BYTES element {i} is {length} bytes long but only "
                                  f"{len(view) - pos} bytes of the tensor are left")  # fmt: skip
        out[i] = bytes(view[pos:pos + length])
        pos += length
    if pos != len(view):
        raise BinaryDataError(f"{label}: {len(view) - pos} bytes left over after its {count} BYTES elements "
                              f"(binary_data_size {len(view)})")  # fmt: skip
    return out


def encode_tensor(array: np.ndarray, datatype: str) -> bytes:
    """``array``'s elements on the wire as ``datatype`` (the inverse of :func:`decode_tensor`)."""
    if datatype == BYTES:
        parts: list[bytes] = []
        for item in np.asarray(array, dtype=object).reshape(-1):
            raw = item.encode() if isinstance(item, str) else bytes(item)
            parts += (_LENGTH.pack(len(raw)), raw)
        return b"".join(parts)
    if datatype == "BF16":  # round to nearest even, as torch does; NaN stays NaN
        bits = np.ascontiguousarray(array, dtype="<f4").view("<u4").astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
        nan = np.isnan(np.asarray(array, dtype=np.float32))
        return np.where(nan, np.uint16(0x7FC0), rounded).astype("<u2").tobytes()
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise BinaryDataError(f"datatype {datatype!r} is not an OIP v2 datatype")
    if datatype == "BOOL":
        return np.ascontiguousarray(array, dtype=np.bool_).view("u1").tobytes()
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def frame(header: bytes, tensors: list[bytes]) -> tuple[bytes, int]:
    """A body of the JSON ``header`` and the binary ``tensors`` after it, and the header's length
    (the value of ``Inference-Header-Content-Length``)."""
    return b"".join([header, *tensors]), len(header)
