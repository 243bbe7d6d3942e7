"""Multi-exit DNN workload profiles for edge-inference markets (AERIA): per-layer FLOPs, the
bytes of each layer's output activation (what a cut there uploads), and exits with accuracies.

The four CNN profiles are computed here from their published architectures at 224x224 input
(FLOPs = 2 x multiply-accumulates; activations in float32):
- AlexNet: Krizhevsky, Sutskever, Hinton, NeurIPS 2012 (the torchvision single-tower variant).
- VGG-16: Simonyan & Zisserman, ICLR 2015 (configuration D).
- ResNet-50: He, Zhang, Ren, Sun, CVPR 2016 (bottleneck blocks [3, 4, 6, 3]).
- MobileNetV2: Sandler et al., CVPR 2018 (Table 2: t, c, n, s).
Totals come out at the familiar 0.71, 15.5, 4.1 and 0.30 GMACs. What crosses the network is
what split-computing systems send: the input as a JPEG (~10:1 on 224x224x3 bytes, 15 KB) and
cut activations quantised to 8 bits (one byte per element; Eshratifar et al., BottleNet 2019;
Matsubara et al., ACM CSUR 2022 survey of split computing). Final-exit accuracy is each
model's ImageNet top-1 (torchvision reference weights). The accuracy of the *intermediate*
exits is not published for these ImageNet models: we assume the shape reported for early-exit
networks (Teerapittayanon et al., BranchyNet 2016; Kaya et al., Shallow-Deep Networks 2019):
0.55, 0.78 and 0.93 of the final accuracy at 1/4, 1/2 and 3/4 depth. Say so when reporting.

The fifth profile, ``minilm_sst2``, is measured by edgefm itself (``python -m
edgefm.models.exits``): exit heads after every layer of all-MiniLM-L6-v2 trained on SST-2, with
measured accuracy, FLOPs per layer and activation bytes. It is stored as JSON beside this file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefm import EdgefmError

DATA = Path(__file__).resolve().parent / "data"
JPEG_BYTES = 3 * 224 * 224 / 10  # a 224x224 RGB image as a JPEG at ~10:1
EXIT_FRACTIONS = (0.55, 0.78, 0.93)  # assumed accuracy of the 1/4, 1/2, 3/4-depth exits, relative


@dataclass(frozen=True)
class Workload:
    name: str
    layer_names: tuple[str, ...]
    layer_flops: tuple[float, ...]  # FLOPs of each layer (one inference)
    out_bytes: tuple[float, ...]  # bytes of each layer's output activation
    input_bytes: float  # what an edge-only plan uploads
    exit_after: tuple[int, ...]  # exit e sits after layer exit_after[e] (0-based)
    exit_accuracy: tuple[float, ...]
    exit_flops: tuple[float, ...]  # the exit head's own FLOPs
    source: str = ""

    @property
    def n_layers(self) -> int:
        return len(self.layer_flops)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Workload:
        try:
            w = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
        except TypeError as exc:
            raise EdgefmError(f"workload: {exc}; expected the fields of Workload") from None
        for key in ("layer_flops", "out_bytes", "exit_accuracy", "exit_flops", "input_bytes"):
            values = getattr(w, key)
            for v in values if isinstance(values, tuple) else (values,):
                # bool is an int to Python, and NaN or a negative count would price work below zero
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                    raise EdgefmError(f"workload {w.name}: {key} holds {v!r}; expected finite numbers >= 0")
        if any(a > 1 for a in w.exit_accuracy):
            raise EdgefmError(f"workload {w.name}: exit_accuracy holds a value above 1; expected accuracies in [0, 1]")
        n = w.n_layers
        if not (len(w.out_bytes) == len(w.layer_names) == n) or n == 0:
            raise EdgefmError(
                f"workload {w.name}: layer_names, layer_flops and out_bytes must have one entry per layer"
            )
        if not (len(w.exit_after) == len(w.exit_accuracy) == len(w.exit_flops)) or not w.exit_after:
            raise EdgefmError(
                f"workload {w.name}: exit_after, exit_accuracy and exit_flops must match and be non-empty"
            )
        if any(not 0 <= e < n for e in w.exit_after) or list(w.exit_after) != sorted(w.exit_after):
            raise EdgefmError(f"workload {w.name}: exit_after must be increasing layer indices in [0, {n})")
        return w


class _Net:
    """Accumulates layers of a CNN at a given spatial size (square inputs)."""

    def __init__(self, channels: int, size: int):
        self.c, self.h = channels, size
        self.names: list[str] = []
        self.flops: list[float] = []
        self.out: list[float] = []
        self._pending = 0.0  # FLOPs of ops folded into the next recorded layer (e.g. pooling)

    def conv(self, cout: int, k: int, stride: int = 1, pad: int | None = None, groups: int = 1) -> float:
        pad = k // 2 if pad is None else pad
        h = (self.h + 2 * pad - k) // stride + 1
        macs = k * k * (self.c // groups) * cout * h * h
        self.c, self.h = cout, h
        return 2.0 * macs

    def pool(self, k: int, stride: int, pad: int = 0) -> None:
        self.h = (self.h + 2 * pad - k) // stride + 1

    def fc(self, cin: int, cout: int) -> float:
        self.c, self.h = cout, 1
        return 2.0 * cin * cout

    def record(self, name: str, flops: float) -> None:
        self.names.append(name)
        self.flops.append(flops + self._pending)
        self._pending = 0.0
        self.out.append(1.0 * self.c * self.h * self.h)  # int8-quantised activation


def _finish(net: _Net, name: str, top1: float, widths: list[int], source: str) -> Workload:
    n = len(net.flops)
    exit_after = sorted({max(0, round(n * f) - 1) for f in (0.25, 0.5, 0.75)} | {n - 1})
    acc = [top1 * f for f in EXIT_FRACTIONS[: len(exit_after) - 1]] + [top1]
    # an early exit is global average pooling + a 1000-way linear layer on that layer's channels
    head = [0.0 if e == n - 1 else 2.0 * widths[e] * 1000 for e in exit_after]
    return Workload(
        name,
        tuple(net.names),
        tuple(net.flops),
        tuple(net.out),
        JPEG_BYTES,
        tuple(exit_after),
        tuple(acc),
        tuple(head),
        source,
    )


def alexnet() -> Workload:
    net, widths = _Net(3, 224), []
    for i, (c, k, s, p, pool) in enumerate(
        [
            (64, 11, 4, 2, True),
            (192, 5, 1, 2, True),
            (384, 3, 1, 1, False),
            (256, 3, 1, 1, False),
            (256, 3, 1, 1, True),
        ],
        1,
    ):
        f = net.conv(c, k, s, p)
        if pool:
            net.pool(3, 2)
        net.record(f"conv{i}", f)
        widths.append(net.c)
    for i, (cin, cout) in enumerate([(9216, 4096), (4096, 4096), (4096, 1000)], 6):
        net.record(f"fc{i}", net.fc(cin, cout))
        widths.append(cout)
    return _finish(net, "alexnet", 56.52 / 100, widths, "Krizhevsky et al. 2012; torchvision top-1")


def vgg16() -> Workload:
    net, widths = _Net(3, 224), []
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    i = 0
    for j, v in enumerate(cfg):
        if v == "M":
            continue
        i += 1
        f = net.conv(int(v), 3)
        if j + 1 < len(cfg) and cfg[j + 1] == "M":
            net.pool(2, 2)
        net.record(f"conv{i}", f)
        widths.append(net.c)
    for k, (cin, cout) in enumerate([(25088, 4096), (4096, 4096), (4096, 1000)], 14):
        net.record(f"fc{k}", net.fc(cin, cout))
        widths.append(cout)
    return _finish(net, "vgg16", 71.59 / 100, widths, "Simonyan & Zisserman 2015; torchvision top-1")


def resnet50() -> Workload:
    net, widths = _Net(3, 224), []
    f = net.conv(64, 7, 2, 3)
    net.pool(3, 2, 1)
    net.record("conv1", f)
    widths.append(64)
    for stage, (blocks, width, stride) in enumerate([(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)], 1):
        for b in range(blocks):
            cin, h_in, s = net.c, net.h, stride if b == 0 else 1
            f = net.conv(width, 1) + net.conv(width, 3, s) + net.conv(width * 4, 1)
            if b == 0:  # projection shortcut: 1x1, stride s, on the block input
                f += 2.0 * cin * width * 4 * ((h_in - 1) // s + 1) ** 2
            net.record(f"layer{stage}.{b}", f)
            widths.append(net.c)
    net.record("fc", net.fc(2048, 1000))
    widths.append(1000)
    return _finish(net, "resnet50", 76.13 / 100, widths, "He et al. 2016; torchvision top-1")


def mobilenet_v2() -> Workload:
    net, widths = _Net(3, 224), []
    net.record("conv0", net.conv(32, 3, 2))
    widths.append(32)
    k = 0
    for t, c, n, s in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]:
        for i in range(n):
            cin = net.c
            f = net.conv(cin * t, 1) if t != 1 else 0.0
            f += net.conv(cin * t, 3, s if i == 0 else 1, groups=cin * t)  # depthwise
            f += net.conv(c, 1)
            k += 1
            net.record(f"block{k}", f)
            widths.append(c)
    net.record("conv_last", net.conv(1280, 1))
    widths.append(1280)
    net.record("fc", net.fc(1280, 1000))
    widths.append(1000)
    return _finish(net, "mobilenet_v2", 71.88 / 100, widths, "Sandler et al. 2018; torchvision top-1")


BUILTIN = {"alexnet": alexnet, "vgg16": vgg16, "resnet50": resnet50, "mobilenet_v2": mobilenet_v2}


def names() -> list[str]:
    return sorted([*BUILTIN, *(p.stem for p in DATA.glob("*.json"))])


def load(name: str) -> Workload:
    """A built-in CNN profile, a measured profile stored beside this file, or a JSON file path."""
    if name in BUILTIN:
        return BUILTIN[name]()
    path = DATA / f"{name}.json" if (DATA / f"{name}.json").is_file() else Path(name)
    if not path.is_file():
        raise EdgefmError(f"--workload {name!r}: unknown; expected one of {', '.join(names())} or a JSON file")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EdgefmError(f"--workload {name!r}: not a JSON file; expected a workload profile in JSON") from None
    if not isinstance(raw, dict):
        raise EdgefmError(f"--workload {name!r}: expected a JSON object with the fields of Workload")
    return Workload.from_dict(raw)
