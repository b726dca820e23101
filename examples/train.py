"""Train the reference conv-nets on CIFAR-10 (or any one-folder-a-class image tree) on the CPU.

    python examples/train.py --arch resnet --data ../shared/datasets/cifar10 --epochs 8

``--data`` is either a folder holding ``train.zip`` and ``test.zip`` (the layout of
``../shared/datasets/cifar10``) or a folder holding ``train/`` and ``test/`` class-folder trees.
Writes ``examples/models/<arch>/``: ``model.onnx`` (dynamic batch), ``weights.npz`` (the state dict
as plain arrays, for the PyTorch-eager benchmark: nothing is unpickled), ``model.toml`` (the model
spec edgekit reads) and ``metrics.json`` (FP32 top-1 on the whole test split).
"""

from __future__ import annotations

import argparse
import json
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from models import ARCHITECTURES

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode every image of a split into (N, 32, 32, 3) RGB uint8, labels, class names."""
    items: list[tuple[str, bytes]] = []
    archive = root / f"{split}.zip"
    if archive.is_file():
        with zipfile.ZipFile(archive) as zf:
            for name in sorted(zf.namelist()):
                if Path(name).suffix.lower() in EXTS:
                    items.append((Path(name).parent.name, zf.read(name)))
    else:
        for path in sorted((root / split).rglob("*")):
            if path.suffix.lower() in EXTS:
                items.append((path.parent.name, path.read_bytes()))
    if not items:
        raise SystemExit(f"no images found for split {split!r} under {root}")
    classes = sorted({c for c, _ in items})
    index = {c: i for i, c in enumerate(classes)}
    images = np.stack([_decode(d) for _, d in items])
    labels = np.array([index[c] for c, _ in items], dtype=np.int64)
    return images, labels, classes


def to_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip, the usual CIFAR recipe."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dx, dy = torch.randint(0, 9, (2,), generator=gen).tolist()
    out = padded[:, :, dy : dy + 32, dx : dx + 32]
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
    return out.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), 500):
        logits = model(to_tensor(images[i : i + 500]))
        correct += int((logits.argmax(1).numpy() == labels[i : i + 500]).sum())
    return 100.0 * correct / len(images)


def train(arch: str, data: Path, epochs: int, batch: int, lr: float, out: Path, seed: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.time()
    train_x, train_y, classes = load_split(data, "train")
    test_x, test_y, test_classes = load_split(data, "test")
    if classes != test_classes:
        raise SystemExit(f"train and test class folders differ: {classes} vs {test_classes}")
    print(f"decoded {len(train_x)} train, {len(test_x)} test images in {time.time() - t0:.1f}s")

    model = ARCHITECTURES[arch](num_classes=len(classes)).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * (len(train_x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.25)
    gen = torch.Generator().manual_seed(seed)
    all_x = to_tensor(train_x)
    all_y = torch.from_numpy(train_y)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(all_x), generator=gen)
        t = time.time()
        for i in range(len(all_x) // batch):
            idx = perm[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(model(augment(all_x[idx], gen)), all_y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, test_x, test_y)
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, test top-1 {acc:.2f}% ({time.time() - t:.0f}s)")

    model.eval()
    top1 = evaluate(model, test_x, test_y)
    export(model, out, classes, top1, arch, epochs, len(train_x), len(test_x), time.time() - t0)


def export(model, out: Path, classes, top1, arch, epochs, n_train, n_test, seconds) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(1, 3, 32, 32)
    torch.onnx.export(
        model,
        (dummy,),
        str(out / "model.onnx"),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    np.savez(out / "weights.npz", **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    labels = ", ".join(f'"{c}"' for c in classes)
    (out / "model.toml").write_text(
        f"# Model spec for edgekit: how the images were preprocessed in training.\n"
        f'name = "cifar10-{arch}"\ntask = "classification"\nlabels = [{labels}]\n\n'
        f'[input]\nname = "input"\nshape = [-1, 3, 32, 32]\nlayout = "NCHW"\ndtype = "float32"\n\n'
        f'[preprocess]\nresize = [32, 32]\nresize_mode = "bilinear"\ncolor_order = "RGB"\n'
        f"scale = 0.00392156862745098\nmean = {list(MEAN)}\nstd = {list(STD)}\n"
    )
    metrics = {
        "arch": arch,
        "fp32_top1": round(top1, 2),
        "test_images": n_test,
        "train_images": n_train,
        "epochs": epochs,
        "train_seconds": round(seconds),
        "torch": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), required=True)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/cifar10")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="default: examples/models/<arch>")
    a = p.parse_args()
    out = a.out or Path(__file__).resolve().parent / "models" / a.arch
    train(a.arch, a.data, a.epochs, a.batch, a.lr, out, a.seed)


if __name__ == "__main__":
    main()
