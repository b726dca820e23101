"""The published models' costs for the estimator, built from their published architectures (no weights).

Each builder returns the ``GraphCost`` that ``edgekit.report.estimate.graph_cost`` would count on the model's
ONNX export (eval mode, BatchNorm folded into the convolutions, ReLU and residual Adds fused as epilogues),
at batch 1 and 224 x 224: torchvision's AlexNet, VGG-11/13/16, ResNet-18/34/50, and MobileNetV2 at width
1.0 and 0.5 (timm's ``mobilenetv2_100`` / ``mobilenetv2_050``: the same blocks, channels rounded to 8).
"""

from __future__ import annotations

from collections.abc import Callable

from edgekit.report.estimate import GraphCost, Layer


class _Net:
    """A builder tracking the activation shape (C, H, W) as layers are appended."""

    def __init__(self, c: int = 3, h: int = 224, w: int = 224) -> None:
        self.shape = (c, h, w)
        self.layers: list[Layer] = []
        self.params = 0

    def _add(self, layer: Layer, params: int = 0) -> None:
        self.layers.append(Layer(f"{layer.op.lower()}{len(self.layers)}", *(layer.op, layer.macs),
                                 layer.weight_elements, layer.activation_elements, layer.kind))  # fmt: skip
        self.params += params

    def conv(self, cout: int, k: int, stride: int = 1, pad: int | None = None, groups: int = 1, relu: bool = True):
        cin, h, w = self.shape
        pad = k // 2 if pad is None else pad
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        weights = cout * (cin // groups) * k * k + cout  # BatchNorm folded: a bias a channel
        kind = "depthwise" if groups > 1 and cin // groups == 1 else "conv"
        macs = cout * ho * wo * (cin // groups) * k * k
        self._add(Layer("", "Conv", macs, weights, cin * h * w + cout * ho * wo, kind), weights)
        self.shape = (cout, ho, wo)
        if relu:
            self._add(Layer("", "Relu (fused)", 0, 0, 0))
        return self

    def add(self) -> _Net:
        """A residual Add fused into the conv before it: it reads the other operand."""
        c, h, w = self.shape
        self._add(Layer("", "Add (fused)", 0, 0, c * h * w))
        return self

    def relu(self) -> _Net:
        self._add(Layer("", "Relu (fused)", 0, 0, 0))
        return self

    def pool(self, k: int, stride: int, pad: int = 0) -> _Net:
        c, h, w = self.shape
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        self._add(Layer("", "MaxPool", 0, 0, c * h * w + c * ho * wo))
        self.shape = (c, ho, wo)
        return self

    def global_pool(self, out: int = 1) -> _Net:
        c, h, w = self.shape
        self._add(Layer("", "GlobalAveragePool", 0, 0, c * h * w + c * out * out))
        self.shape = (c, out, out)
        return self

    def fc(self, out: int, relu: bool = False) -> _Net:
        n = self.shape[0] * self.shape[1] * self.shape[2]
        self._add(Layer("", "Gemm", n * out, n * out + out, n + out, "gemm"), n * out + out)
        self.shape = (out, 1, 1)
        if relu:
            self.relu()
        return self

    def cost(self) -> GraphCost:
        return GraphCost(tuple(self.layers), self.params)


def alexnet() -> GraphCost:
    n = _Net().conv(64, 11, 4, 2).pool(3, 2).conv(192, 5, 1, 2).pool(3, 2)
    n.conv(384, 3).conv(256, 3).conv(256, 3).pool(3, 2).global_pool(6)
    return n.fc(4096, True).fc(4096, True).fc(1000).cost()


def vgg(config: tuple) -> GraphCost:
    n = _Net()
    for item in config:
        n = n.pool(2, 2) if item == "M" else n.conv(item, 3)
    return n.global_pool(7).fc(4096, True).fc(4096, True).fc(1000).cost()


VGG = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def resnet(blocks: tuple[int, ...], bottleneck: bool) -> GraphCost:
    n = _Net().conv(64, 7, 2, 3).pool(3, 2, 1)
    cin = 64
    for stage, count in enumerate(blocks):
        width = 64 * 2**stage
        cout = width * 4 if bottleneck else width
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            c, h, w = n.shape
            if stride != 1 or cin != cout:  # the downsample branch: a 1x1 conv on the block's input
                n.conv(cout, 1, stride, 0, relu=False)
                n.shape = (c, h, w)
            if bottleneck:
                n.conv(width, 1, 1, 0).conv(width, 3, stride).conv(cout, 1, 1, 0, relu=False)
            else:
                n.conv(width, 3, stride).conv(cout, 3, 1, relu=False)
            n.add().relu()
            cin = cout
    return n.global_pool().fc(1000).cost()


def _divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenet_v2(width: float = 1.0) -> GraphCost:
    n = _Net().conv(_divisible(32 * width), 3, 2)
    cin = _divisible(32 * width)
    settings = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )
    for t, c, count, s in settings:
        cout = _divisible(c * width)
        for i in range(count):
            stride = s if i == 0 else 1
            if t != 1:
                n.conv(cin * t, 1, 1, 0)
            n.conv(cin * t, 3, stride, groups=cin * t).conv(cout, 1, 1, 0, relu=False)
            if stride == 1 and cin == cout:
                n.add()
            cin = cout
    return n.conv(1280, 1, 1, 0).global_pool().fc(1000).cost()


MODELS: dict[str, Callable[[], GraphCost]] = {
    "alexnet": alexnet,
    "vgg11": lambda: vgg(VGG["vgg11"]),
    "vgg13": lambda: vgg(VGG["vgg13"]),
    "vgg16": lambda: vgg(VGG["vgg16"]),
    "resnet18": lambda: resnet((2, 2, 2, 2), False),
    "resnet34": lambda: resnet((3, 4, 6, 3), False),
    "resnet50": lambda: resnet((3, 4, 6, 3), True),
    "mobilenetv2_100": lambda: mobilenet_v2(1.0),
    "mobilenetv2_050": lambda: mobilenet_v2(0.5),
}
