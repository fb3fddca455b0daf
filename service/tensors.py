"""Open Inference Protocol (v2) inference requests: JSON tensors, or the binary tensor data extension.

A request body is the JSON inference request, or — when the `Inference-Header-Content-Length`
header is set — that many bytes of JSON followed by the raw bytes of every input whose
`parameters.binary_data_size` says so, in input order, little-endian and row-major. This module
turns either into named numpy arrays; what they mean for a model is `service.routes.v2`'s business.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import InvalidTensor

#: The protocol's numeric datatypes and the numpy dtype of each (BYTES is not served here).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


class RequestInput(BaseModel):
    """One input tensor: its data inline (`data`, flat or nested) or in the binary section."""

    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestOutput(BaseModel):
    """An output asked for, with how to return it (`binary_data`, and here `datatype`)."""

    model_config = ConfigDict(extra="allow")

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    """The JSON part of an inference request."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


def parse_inference_request(
    body: bytes, header_length: str | None
) -> tuple[InferenceRequest, dict[str, np.ndarray]]:
    """The request and its inputs by name, each as an array of its datatype and shape."""
    header, binary = body, b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidTensor(
                f"Inference-Header-Content-Length is {header_length!r}, but the body has {len(body)} bytes"
            )
        header, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in request.inputs:
        if tensor.name in arrays:
            raise InvalidTensor(f"input {tensor.name!r} is given twice")
        array, used = _decode(tensor, binary, offset)
        arrays[tensor.name] = array
        offset += used
    if offset != len(binary):
        raise InvalidTensor(
            f"the body holds {len(binary)} bytes of binary tensor data, but the inputs' binary_data_size "
            f"add up to {offset}"
        )
    return request, arrays


def _decode(tensor: RequestInput, binary: bytes, offset: int) -> tuple[np.ndarray, int]:
    """The tensor's array, and how many bytes of the binary section it took."""
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidTensor(
            f"input {tensor.name!r}: datatype {tensor.datatype!r} is not served; "
            f"use one of {', '.join(DATATYPES)}"
        )
    if any(dim < 0 for dim in tensor.shape):
        raise InvalidTensor(f"input {tensor.name!r}: shape {tensor.shape} has a negative dimension")
    count = math.prod(tensor.shape)
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != count * dtype.itemsize:
            raise InvalidTensor(
                f"input {tensor.name!r}: binary_data_size {size!r} is not {count * dtype.itemsize} "
                f"({tensor.datatype} {tensor.shape})"
            )
        if offset + size > len(binary):
            raise InvalidTensor(
                f"input {tensor.name!r}: its {size} bytes of binary data go past the end of the body "
                "(set Inference-Header-Content-Length to the size of the JSON part)"
            )
        array = np.frombuffer(binary, dtype, count, offset).reshape(tensor.shape)
        return array.astype(dtype.newbyteorder("="), copy=False), size
    if tensor.data is None:
        raise InvalidTensor(f"input {tensor.name!r} has neither data nor parameters.binary_data_size")
    try:
        array = np.asarray(tensor.data, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidTensor(
            f"input {tensor.name!r}: its data is not {tensor.datatype} values ({exc})"
        ) from None
    if array.size != count:
        raise InvalidTensor(
            f"input {tensor.name!r}: {array.size} values in data for shape {tensor.shape} ({count} values)"
        )
    return array.reshape(tensor.shape), 0
