"""A compact single-stage, anchor-free detector in the ResNet line, sized for 128x128 scenes.

- Backbone: ResNet-style basic blocks (He et al. 2016), a stride-2 stem and four stride-2 stages;
  the stride-8, 16 and 32 stage outputs feed the neck.
- Neck (FPN-lite + PAN): 1x1 laterals to one width, a top-down pass (nearest upsample + add, Lin et
  al. 2017) and a bottom-up pass (stride-2 3x3 conv + add, as in PANet), one 3x3 conv per level.
- Head: decoupled (a class branch and a box branch per level, as in YOLOX/YOLOv8), anchor-free: each
  grid cell predicts the distances (left, top, right, bottom) from its centre to the box edges, in
  grid units through a softplus, and one logit per class. There is no objectness output: a class
  score is the detector's confidence that the cell holds an object of that class.

``Detector.forward`` returns the raw per-cell outputs for training. ``ExportWrapper`` adds the
decoding and the sigmoid, giving the YOLOv8 output layout ``[B, 4 + C, N]``: rows centre-x, centre-y,
width, height in input pixels, then C class scores in [0, 1]; the N cells run over stride 8, 16 and
32, each level row-major (y, then x).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

STRIDES = (8, 16, 32)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU: the unit every layer below is built of."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    """A stride-2 stage of ``blocks`` basic blocks."""
    return nn.Sequential(*[BasicBlock(cin if i == 0 else cout, cout, 2 if i == 0 else 1) for i in range(blocks)])


class Detector(nn.Module):
    """Backbone + FPN-lite/PAN neck + decoupled anchor-free head; see the module docstring."""

    def __init__(
        self,
        num_classes: int = 10,
        size: int = 128,
        widths: tuple[int, int, int, int, int] = (24, 32, 64, 96, 128),
        blocks: tuple[int, int, int, int] = (1, 2, 2, 2),
        neck: int = 64,
        cls_convs: int = 2,
        box_convs: int = 2,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.size = size
        w0, w1, w2, w3, w4 = widths
        self.stem = conv_bn(3, w0, 3, 2)  # stride 2
        self.s4 = stage(w0, w1, blocks[0])
        self.s8 = stage(w1, w2, blocks[1])
        self.s16 = stage(w2, w3, blocks[2])
        self.s32 = stage(w3, w4, blocks[3])
        self.lateral = nn.ModuleList(conv_bn(c, neck, 1) for c in (w2, w3, w4))
        self.top_down = nn.ModuleList(conv_bn(neck, neck) for _ in STRIDES)
        self.down = nn.ModuleList(conv_bn(neck, neck, 3, 2) for _ in STRIDES[1:])
        self.bottom_up = nn.ModuleList(conv_bn(neck, neck) for _ in STRIDES[1:])
        self.cls_branch = nn.ModuleList(
            nn.Sequential(*[conv_bn(neck, neck) for _ in range(cls_convs)]) for _ in STRIDES
        )
        self.box_branch = nn.ModuleList(
            nn.Sequential(*[conv_bn(neck, neck) for _ in range(box_convs)]) for _ in STRIDES
        )
        self.cls_out = nn.ModuleList(nn.Conv2d(neck, num_classes, 1) for _ in STRIDES)
        self.box_out = nn.ModuleList(nn.Conv2d(neck, 4, 1) for _ in STRIDES)
        for conv in self.cls_out:  # start every class score near 0.01 (focal-loss prior, Lin et al. 2017)
            nn.init.constant_(conv.bias, -4.6)
        for conv in self.box_out:  # start boxes at about 1.3 grid cells from the centre on each side
            nn.init.constant_(conv.bias, 1.0)
        centres, strides = [], []
        for s in STRIDES:
            n = size // s
            ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            centres.append(torch.stack([xs.flatten(), ys.flatten()], 1).float().add(0.5))
            strides.append(torch.full((n * n,), float(s)))
        self.register_buffer("centres", torch.cat(centres), persistent=False)  # (N, 2) in grid units
        self.register_buffer("strides", torch.cat(strides), persistent=False)  # (N,)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel-first head outputs: box distances (B, 4, N) in grid units (softplus), class logits (B, C, N)."""
        c3 = self.s8(self.s4(self.stem(x)))
        c4 = self.s16(c3)
        c5 = self.s32(c4)
        p5 = self.lateral[2](c5)
        p4 = self.lateral[1](c4) + F.interpolate(p5, scale_factor=2.0, mode="nearest")
        p3 = self.lateral[0](c3) + F.interpolate(p4, scale_factor=2.0, mode="nearest")
        n3 = self.top_down[0](p3)
        n4 = self.bottom_up[0](self.top_down[1](p4) + self.down[0](n3))
        n5 = self.bottom_up[1](self.top_down[2](p5) + self.down[1](n4))
        boxes, logits = [], []
        for i, f in enumerate((n3, n4, n5)):
            cells = (self.size // STRIDES[i]) ** 2  # a Python int: the ONNX graph keeps static dims
            boxes.append(self.box_out[i](self.box_branch[i](f)).reshape(-1, 4, cells))
            logits.append(self.cls_out[i](self.cls_branch[i](f)).reshape(-1, self.num_classes, cells))
        box, logit = torch.cat(boxes, 2), torch.cat(logits, 2)
        if box.dtype != torch.float32:  # bf16 autocast (training): decoding and losses still run in FP32
            box, logit = box.float(), logit.float()
        return F.softplus(box), logit

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs for training: box distances (B, N, 4) in grid units, class logits (B, N, C)."""
        dist, logits = self.heads(x)
        return dist.transpose(1, 2), logits.transpose(1, 2)

    def decode(self, dist: torch.Tensor) -> torch.Tensor:
        """Distances (B, N, 4) in grid units -> boxes x1, y1, x2, y2 (B, N, 4) in input pixels."""
        s = self.strides[:, None]
        lt = (self.centres - dist[..., :2]) * s
        rb = (self.centres + dist[..., 2:]) * s
        return torch.cat([lt, rb], -1)


class ExportWrapper(nn.Module):
    """The deployable graph: [B, 4 + C, N] with cx, cy, w, h in input pixels, then sigmoid class scores."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist, logits = self.detector.heads(x)  # (B, 4, N), (B, C, N)
        s = self.detector.strides[None, None, :]
        c = self.detector.centres.t()[None]  # (1, 2, N)
        centre = (c + (dist[:, 2:] - dist[:, :2]) * 0.5) * s
        size = (dist[:, :2] + dist[:, 2:]) * s
        return torch.cat([centre, size, torch.sigmoid(logits)], 1)
