"""The ONNX corpus: small models like those other toolchains and older exporters write, built here.

Each is a tiny random-weight image classifier (input (N, 3, H, W), 32x32 here, 10 classes) with the blocks
third-party models carry: HardSwish and HardSigmoid (MobileNetV3), SiLU (EfficientNet), a Resize, and
Squeeze-Excite blocks, with a dynamic batch, height and width.

- ``torch-opset11`` ... ``torch-opset17``: one PyTorch net exported by the TorchScript exporter at opsets 11,
  12, 13 and 17 (below 14 it writes HardSwish as x * HardSigmoid(x), as older exporters do).
- ``helper-opset11``: a graph written with ``onnx.helper`` at opset 11, as tf2onnx or Paddle2ONNX write one:
  Resize with the opset-11 ``roi``/``scales`` inputs, SiLU as x * Sigmoid(x), an SE block with its own
  Flatten-free 1x1 convolutions, shapes left to the runtime (no value_info).

Training is not needed (the tests compare INT8 with FP32 of the same weights), but random weights make
features less regular than trained ones; the bounds the tests state are for these nets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OPSETS = (11, 12, 13, 17)
CORPUS = (*(f"torch-opset{o}" for o in OPSETS), "helper-opset11")


def _torch_net(images: np.ndarray):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class SqueezeExcite(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.reduce = nn.Conv2d(channels, channels // 4, 1)
            self.expand = nn.Conv2d(channels // 4, channels, 1)

        def forward(self, x):
            w = F.adaptive_avg_pool2d(x, 1)
            return x * F.hardsigmoid(self.expand(F.relu(self.reduce(w))))

    class CorpusNet(nn.Module):
        """MobileNetV3/EfficientNet-style: HardSwish stem, depthwise + SE block, SiLU, Resize, linear head."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Hardswish())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.Hardswish())
            self.se = SqueezeExcite(16)
            self.pw = nn.Sequential(nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24), nn.SiLU())
            self.up = nn.Sequential(nn.Conv2d(24, 24, 3, 1, 1), nn.BatchNorm2d(24), nn.ReLU())
            self.head = nn.Linear(24, 10)

        def forward(self, x):
            x = self.pw(self.se(self.dw(self.stem(x))))
            x = self.up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))

    torch.manual_seed(0)
    net = CorpusNet()
    # BatchNorm statistics recomputed on the images (one pass in train mode, cumulative averages; no weight
    # is trained): with torch's default initialisation the activations shrink layer by layer and the pooled
    # features would be the same for every image.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(images))
    return net.eval()


def export_torch(path: Path, opset: int, images: np.ndarray) -> Path:
    """The corpus net exported at ``opset`` with a dynamic batch, height and width."""
    import torch

    torch.onnx.export(
        _torch_net(images), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
        opset_version=opset, dynamo=False,
    )  # fmt: skip
    return path


def build_helper_model(path: Path, opset: int = 11) -> Path:
    """An opset-11 classifier written with onnx.helper, the way converters from other frameworks write one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def weight(name: str, *shape: int, scale: float = 1.0) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        value = (rng.standard_normal(shape) * scale * np.sqrt(2.0 / fan_in)).astype(np.float32)  # He
        inits.append(numpy_helper.from_array(value, name))
        return name

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def conv(x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1) -> str:
        w, b = weight(f"{name}.w", cout, cin // group, k, k), weight(f"{name}.b", cout, scale=0.1)
        nodes.append(helper.make_node("Conv", [x, w, b], [name], name=name, kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4, group=group))  # fmt: skip
        return name

    def op(kind: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name

    # in-graph normalisation, as converted TensorFlow and Paddle models often carry it
    x = op("Div", [op("Sub", ["image", const("mean", np.full((1, 3, 1, 1), 0.45, np.float32))], "centre"),
                   const("std", np.full((1, 3, 1, 1), 0.25, np.float32))], "normalise")  # fmt: skip
    x = conv(x, "stem", 3, 16, 3, stride=2)
    x = op("Mul", [x, op("HardSigmoid", [x], "stem_hsig", alpha=1 / 6, beta=0.5)], "stem_hswish")
    x = conv(x, "dw", 16, 16, 3, group=16)
    x = op("Mul", [x, op("HardSigmoid", [x], "dw_hsig", alpha=1 / 6, beta=0.5)], "dw_hswish")
    s = op("GlobalAveragePool", [x], "se_pool")
    s = op("Relu", [conv(s, "se_reduce", 16, 4, 1)], "se_relu")
    s = op("HardSigmoid", [conv(s, "se_expand", 4, 16, 1)], "se_gate", alpha=1 / 6, beta=0.5)
    x = op("Mul", [x, s], "se_scale")
    x = conv(x, "pw", 16, 24, 1)
    x = op("Mul", [x, op("Sigmoid", [x], "pw_sig")], "pw_silu")
    roi, scales = (
        const("resize_roi", np.zeros(0, np.float32)),
        const("resize_scales", np.array([1, 1, 2, 2], np.float32)),
    )
    x = op("Resize", [x, roi, scales], "resize", mode="nearest", coordinate_transformation_mode="asymmetric",
           nearest_mode="floor")  # fmt: skip
    x = op("Relu", [conv(x, "up", 24, 24, 3)], "up_relu")
    x = op("Flatten", [op("GlobalAveragePool", [x], "pool")], "flat", axis=1)
    op("Gemm", [x, weight("fc.w", 10, 24), weight("fc.b", 10, scale=0.1)], "logits", transB=1)
    graph = helper.make_graph(
        nodes, "corpus-helper",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="corpus-helper")
    model.ir_version = 6  # what an opset-11 converter writes
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def standardize_head(path: Path, images: np.ndarray) -> Path:
    """Rescale the final Gemm so its inputs are standardised over ``images``: W' = W / std, b' = -W' mean.

    A random net's pooled features barely vary between images, so its logits are dominated by the bias and it
    predicts one class for every image, and top-1 agreement would say nothing. Standardising the features the
    head reads (a data-dependent initialisation, not training) spreads the predictions over the classes.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(path))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(gemm.input[0]))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    features = session.run([gemm.input[0]], {session.get_inputs()[0].name: images})[0]
    # a floor at the median: a near-constant feature would otherwise get a huge weight that only amplifies noise
    mean, std = features.mean(axis=0), features.std(axis=0)
    std = np.maximum(std, np.median(std))
    inits = {i.name: i for i in model.graph.initializer}
    w = numpy_helper.to_array(inits[gemm.input[1]])  # (classes, features): transB=1
    w = (w / std[None, :] * 2.0).astype(np.float32)
    b = (-w @ mean).astype(np.float32)
    inits[gemm.input[1]].CopyFrom(numpy_helper.from_array(w, gemm.input[1]))
    inits[gemm.input[2]].CopyFrom(numpy_helper.from_array(b, gemm.input[2]))
    onnx.save(model, str(path))
    return path


def build(name: str, folder: Path, images: np.ndarray) -> Path:
    """Corpus model ``name`` in ``folder``, its head standardised on ``images`` (preprocessed, 32x32)."""
    path = folder / f"{name}.onnx"
    if name.startswith("torch-opset"):
        export_torch(path, int(name.removeprefix("torch-opset")), images)
    else:
        build_helper_model(path, int(name.removeprefix("helper-opset")))
    return standardize_head(path, images)
