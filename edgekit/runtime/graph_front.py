"""Preprocessing inside the graph: the bundle's model takes frames as uint8 HWC and does the rest itself.

A ``Front`` is the pixel half of ``edgekit.runtime.preprocess.preprocess`` (everything after the geometry:
colour order, ``pixel * scale``, ``- mean``, ``/ std``, HWC -> CHW, the model's float type), built at load
time from the manifest's ``preprocess`` and ``input`` records (no bundle format change: old bundles benefit).
The host keeps the geometry (resize, centre crop, letterbox): it works on uint8 and gives the same pixels
the bundle was calibrated on (cv2's fixed-point bilinear and area resizing have no bit-equal graph op).

Each backend runtime realises the same ops in its own graph API, in front of the bundle's model:

- ONNX Runtime: ONNX nodes (Transpose, Gather, Cast, Mul, Sub, Div) composed in front of the model's graph by
  ``onnx_front``, which edits the model's protobuf bytes directly (a few dozen lines of the wire format), so
  the runtime needs onnxruntime only, not the ``onnx`` package;
  The ONNX graph takes two inputs: ``edgekit_frame`` (N, H, W, 3) uint8, and ``edgekit_channel_order`` (3,)
  int64, the frame's channel index of each of the model's channels (``Front.order``), so one graph serves
  BGR and RGB frames alike (a Gather on three planes);
- OpenVINO: PrePostProcessor steps in front of the read ``ov.Model`` (``openvino_front``), for frames in a
  fixed order (BGR, the camera's); RGB frames are flipped on the host first.

A runtime that supports this has a method ``frame_runner(front) -> FrameRunner`` (frames and their colour
order in, the model's first output out); ``edgekit.runtime.Bundle`` uses it for ``predict``/``predict_batch``
and checks it against the self-test when it loads (see docs/design.md, "Preprocessing in the graph").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.spec import InputSpec, PreprocessSpec

FRAME_INPUT = "edgekit_frame"
ORDER_INPUT = "edgekit_channel_order"
_PREFIX = "edgekit_front/"
_FLOAT_TYPES = {"float32": 1, "float16": 10}  # ONNX TensorProto.DataType
FrameRunner = Callable[[np.ndarray, str], np.ndarray]  # (N, H, W, 3) uint8 frames, their colour order -> outputs

_SAME = np.array([0, 1, 2], np.int64)
_SWAP = np.array([2, 1, 0], np.int64)


@dataclass(frozen=True)
class Front:
    """The pixel preprocessing of one bundle, as the graph does it."""

    input_name: str  # the model's own (float) input, which the front feeds
    batch: int  # the model's batch dimension: -1 dynamic
    hw: tuple[int, int]
    layout: str  # the model's layout: NCHW (the front transposes) or NHWC
    dtype: str  # the model's input type: float32 or float16
    color_order: str  # the model's colour order
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, spec: PreprocessSpec, inp: InputSpec) -> Front | None:
        """The front of a bundle's preprocessing and input; None when the graph cannot take frames (not three
        channels, or an input type other than float32/float16)."""
        if inp.channels != 3 or inp.dtype not in _FLOAT_TYPES:
            return None
        return cls(input_name=inp.name, batch=inp.shape[0] if inp.shape[0] > 0 else -1, hw=inp.hw,
                   layout=inp.layout, dtype=inp.dtype, color_order=spec.color_order, scale=float(spec.scale),
                   mean=tuple(map(float, spec.mean)), std=tuple(map(float, spec.std)))  # fmt: skip

    def order(self, color_order: str) -> np.ndarray:
        """The ``edgekit_channel_order`` input for frames in ``color_order`` (BGR or RGB)."""
        return _SAME if color_order.upper() == self.color_order else _SWAP

    def frame_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, *self.hw, 3)

    def tensors(self, frames: np.ndarray, color_order: str) -> np.ndarray:
        """What the graph computes, in NumPy: (N, H, W, 3) uint8 frames -> the model's input (N, ...), exactly
        as ``preprocess`` does it (the float path)."""
        x = frames[..., self.order(color_order)].astype(np.float32) * np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.dtype(self.dtype))

    def frames_of(self, tensors: np.ndarray) -> tuple[np.ndarray, bool]:
        """The uint8 frames (in the model's colour order) whose preprocessing gives ``tensors`` (the model's
        input, e.g. the self-test's stored inputs), rounded; and whether that is exact (the tensors were made
        from uint8 images, as the self-test's are unless they are synthetic)."""
        x = np.asarray(tensors, np.float64)
        if self.layout == "NCHW":
            x = x.transpose(0, 2, 3, 1)
        pixels = (x * np.asarray(self.std) + np.asarray(self.mean)) / self.scale
        frames = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        again = self.tensors(frames, self.color_order).astype(np.float32)
        exact = bool(np.allclose(again, np.asarray(tensors, np.float32), rtol=0, atol=1e-5))
        return np.ascontiguousarray(frames), exact


# --- ONNX: the front as nodes, composed in front of the model's graph at the protobuf level -------------------
# Field numbers are onnx.proto's (stable since ONNX 1.0): ModelProto.graph 7; GraphProto.node 1, input 11;
# NodeProto input 1, output 2, name 3, op_type 4, attribute 5; AttributeProto name 1, i 3, t 5, ints 8, type 20;
# TensorProto dims 1, data_type 2, raw_data 9; ValueInfoProto name 1, type 2; TypeProto.tensor_type 1;
# TypeProto.Tensor elem_type 1, shape 2; TensorShapeProto.dim 1; Dimension dim_value 1, dim_param 2.


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values are ten-byte varints
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _tensor(array: np.ndarray) -> bytes:
    data_type = {np.dtype(np.float32): 1, np.dtype(np.int64): 7, np.dtype(np.float16): 10}[array.dtype]
    dims = b"".join(_int_field(1, d) for d in array.shape)
    return (
        dims
        + _int_field(2, data_type)
        + _field(9, np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    )


def _attribute(name: str, *, ints: tuple[int, ...] | None = None, i: int | None = None,
               tensor: np.ndarray | None = None) -> bytes:  # fmt: skip
    out = _field(1, name)
    if ints is not None:
        out += b"".join(_int_field(8, v) for v in ints) + _int_field(20, 7)  # INTS
    elif i is not None:
        out += _int_field(3, i) + _int_field(20, 2)  # INT
    else:
        assert tensor is not None
        out += _field(5, _tensor(tensor)) + _int_field(20, 4)  # TENSOR
    return out


def _node(op: str, inputs: list[str], outputs: list[str], *attributes: bytes) -> bytes:
    body = b"".join(_field(1, n) for n in inputs) + b"".join(_field(2, n) for n in outputs)
    body += _field(3, _PREFIX + outputs[0].removeprefix(_PREFIX)) + _field(4, op)
    return _field(1, body + b"".join(_field(5, a) for a in attributes))


def _value_info(name: str, elem_type: int, dims: tuple[int | str, ...]) -> bytes:
    shape = b"".join(_field(1, _int_field(1, d) if isinstance(d, int) else _field(2, d)) for d in dims)
    return _field(11, _field(1, name) + _field(2, _field(1, _int_field(1, elem_type) + _field(2, shape))))


def _fields(data: bytes):
    """(field number, wire type, field start, payload start, end) of each top-level field of a protobuf message."""
    pos, n = 0, len(data)
    while pos < n:
        begin = pos
        key, pos = _read_varint(data, pos)
        number, wire, start = key >> 3, key & 7, pos
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, start = _read_varint(data, pos)
            pos = start + length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > n:
            raise ValueError("truncated protobuf message")
        yield number, wire, begin, start, pos


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _name_of(value_info: bytes) -> str | None:
    for number, wire, _, start, end in _fields(value_info):
        if number == 1 and wire == 2:
            return value_info[start:end].decode()
    return None


def _front_nodes(front: Front) -> bytes:
    p = _PREFIX
    channel_axis = 1 if front.layout == "NCHW" else 3
    shape = (1, 3, 1, 1) if front.layout == "NCHW" else (1, 1, 1, 3)
    consts = {
        "scale": np.array(front.scale, np.float32),
        "mean": np.asarray(front.mean, np.float32).reshape(shape),
        "std": np.asarray(front.std, np.float32).reshape(shape),
    }
    nodes = [_node("Constant", [], [p + k], _attribute("value", tensor=v)) for k, v in consts.items()]
    x = FRAME_INPUT
    if front.layout == "NCHW":  # on uint8, before the Cast: a quarter of the bytes to move
        nodes.append(_node("Transpose", [x], [p + "chw"], _attribute("perm", ints=(0, 3, 1, 2))))
        x = p + "chw"
    nodes.append(_node("Gather", [x, ORDER_INPUT], [p + "ordered"], _attribute("axis", i=channel_axis)))
    nodes.append(_node("Cast", [p + "ordered"], [p + "float"], _attribute("to", i=1)))
    nodes.append(_node("Mul", [p + "float", p + "scale"], [p + "scaled"]))
    nodes.append(_node("Sub", [p + "scaled", p + "mean"], [p + "centred"]))
    last = front.input_name if front.dtype == "float32" else p + "normalised"
    nodes.append(_node("Div", [p + "centred", p + "std"], [last]))
    if front.dtype != "float32":
        nodes.append(_node("Cast", [last], [front.input_name], _attribute("to", i=_FLOAT_TYPES[front.dtype])))
    return b"".join(nodes)


def onnx_front(model: bytes, front: Front) -> bytes:
    """The ONNX model ``model`` (serialized ModelProto bytes) with the front composed in front of its input
    ``front.input_name``: the graph's inputs become ``edgekit_frame`` and ``edgekit_channel_order``, and its
    outputs are unchanged. A ValueError if the graph has no such input, or already has a front."""
    if FRAME_INPUT.encode() in model:
        raise ValueError(f"the model already has an input or tensor named {FRAME_INPUT}")
    graph_at = [(b, s, e) for number, wire, b, s, e in _fields(model) if number == 7 and wire == 2]
    if len(graph_at) != 1:
        raise ValueError("not an ONNX model with one graph")
    gb, gs, ge = graph_at[0]
    graph = model[gs:ge]
    batch: int | str = front.batch if front.batch > 0 else "N"
    new_inputs = _value_info(FRAME_INPUT, 2, (batch, *front.hw, 3)) + _value_info(ORDER_INPUT, 7, (3,))
    parts, replaced, nodes_placed = [], False, False
    for number, wire, begin, start, end in _fields(graph):
        whole = graph[begin:end]
        if number == 1 and not nodes_placed:
            parts.append(_front_nodes(front))
            nodes_placed = True
        if number == 11 and wire == 2 and _name_of(graph[start:end]) == front.input_name:
            parts.append(new_inputs)
            replaced = True
            continue
        parts.append(whole)
    if not replaced or not nodes_placed:
        raise ValueError(f"the model's graph has no input named {front.input_name!r}")
    new_graph = b"".join(parts)
    return model[:gb] + _field(7, new_graph) + model[ge:]


# --- OpenVINO: PrePostProcessor steps in front of an ov.Model -------------------------------------------------

OPENVINO_FRAME_ORDER = "BGR"  # OpenCV's and cameras' order; frames in the other order are flipped on the host


def openvino_front(model: Any, front: Front) -> Any:
    """``model`` (an ``ov.Model`` read from the bundle) with OpenVINO's PrePostProcessor in front of its input:
    the input takes (N, H, W, 3) u8 frames in ``OPENVINO_FRAME_ORDER``, then converts to f32, reverses the
    channels if the model's order is the other one, ``/ (1 / scale)``, ``- mean``, ``/ std``, and converts to
    the model's layout. The channel order is fixed in the graph: a runtime Gather on the order (as the ONNX
    front has) stops the CPU plugin from fusing these steps into the first layer (measured: +28 to +47 us on
    the reference ResNet, against +0 to +10 us for these steps)."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    params = model.get_parameters()
    at = [i for i, p in enumerate(params) if front.input_name in p.output(0).get_names()]
    if not at and len(params) == 1:
        at = [0]
    if len(at) != 1:
        raise ValueError(f"the model has no input named {front.input_name!r}")
    ppp = PrePostProcessor(model)
    port = ppp.input(at[0])
    port.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    port.model().set_layout(ov.Layout(front.layout))
    steps = port.preprocess().convert_element_type(ov.Type.f32)
    if front.color_order != OPENVINO_FRAME_ORDER:
        steps.reverse_channels()
    steps.scale(1.0 / front.scale).mean(list(front.mean)).scale(list(front.std))
    if front.dtype != "float32":
        steps.convert_element_type(ov.Type.f16)
    return ppp.build()


__all__ = ["FRAME_INPUT", "OPENVINO_FRAME_ORDER", "ORDER_INPUT", "FrameRunner", "Front", "onnx_front", "openvino_front"]
