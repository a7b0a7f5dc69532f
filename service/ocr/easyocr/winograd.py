"""CRAFT's VGG middle (slices 2-4) as Winograd convolutions on the CPU, through NNPACK.

oneDNN's direct fp32 convolutions already run at the cores' peak, so fewer multiplications are the
only way to a faster exact-precision detector: NNPACK's Winograd F(6x6, 3x3) needs a fifth of the
multiplications of a 3x3 layer, and wins on layers of 256-512 channels. NNPACK reads NCHW only, and
changing the layout of a large activation costs a good part of a layer's time, so slices 2-4 run
in NCHW end to end: the tensor changes layout once on the way in, after slice 2's max-pool (a
quarter of the size before it), and once per slice output on the way out (nets.py). The middle's
max-pools become two elementwise maxima, since max_pool2d on NCHW also computes indices and is
much slower.

Results move by float rounding only: every read and quad on the dev set is the same as with
direct convolutions, and confidences stay as close to the reference (docs/benchmarks.md has the
per-layer and per-page figures, and docs/design.md what else was tried).
"""

from __future__ import annotations

import torch
from torch import nn

from .nets import Craft

SLICES = ("slice2", "slice3", "slice4")


def available() -> bool:
    """Whether NNPACK runs on this CPU (it needs AVX2); the call also initialises it."""
    return torch._nnpack_available()


class WinogradConv2d(nn.Module):
    """A stride-1, undilated Conv2d through NNPACK: NCHW in, NCHW out.

    NNPACK sizes its thread pool once, from torch's thread count at its first convolution:
    load_model sets that count before any model is built.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError(f"NNPACK takes stride 1, dilation 1 and one group; got {conv}")
        # NCHW weights: NNPACK would otherwise copy channels_last ones on every call.
        self.weight = nn.Parameter(conv.weight.detach().contiguous(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), requires_grad=False)
        self.padding = list(conv.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._nnpack_spatial_convolution(x, self.weight, self.bias, self.padding)


class PairMaxPool(nn.Module):
    """MaxPool2d(2, 2) of an NCHW tensor with even sides, as a maximum of rows, then of columns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        rows = x.view(n, c, h // 2, 2, w)
        rows = torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1]).view(n, c, h // 2, w // 2, 2)
        return torch.maximum(rows[..., 0], rows[..., 1])


class ToNchw(nn.Module):
    """The layout change into the NCHW middle."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()


def use_winograd(craft: Craft) -> Craft:
    """Rewrite a loaded, BN-folded, fp32 CPU `craft` in place so slices 2-4 run through NNPACK.

    Canvases are multiples of 32 (detect.canvas), so every map the middle pools has even sides.
    """
    base = craft.basenet
    for name in SLICES:
        seq: nn.Sequential = getattr(base, name)
        for key, layer in list(seq.named_children()):
            if isinstance(layer, nn.Conv2d):
                seq._modules[key] = WinogradConv2d(layer)
            elif isinstance(layer, nn.MaxPool2d):
                # Slice 2 opens by pooling slice 1's channels_last output: pool it so, then change layout.
                opens = name == SLICES[0] and key == next(iter(seq._modules))
                seq._modules[key] = nn.Sequential(layer, ToNchw()) if opens else PairMaxPool()
    return craft
