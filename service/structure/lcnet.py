"""PP-LCNet x1.0, the backbone both structure networks share (PicoDet layout, SLANet_plus tables).

Paddle's layers as the graphs hold them: every convolution but the SE's is followed by a batch
norm and hard swish; the SE gate is a hard sigmoid. `ConvBN.fold` puts each batch norm into its
convolution for serving.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Paddle's hard-sigmoid slope as the graphs store it (float32 1/6, a hair off torch's exact 1/6).
SE_SLOPE = 0.16666670143604279

# (cin, cout, kernel, stride, se) per block, grouped into stages.
STAGES = (
    ((16, 32, 3, 1, False),),
    ((32, 64, 3, 2, False), (64, 64, 3, 1, False)),
    ((64, 128, 3, 2, False), (128, 128, 3, 1, False)),
    ((128, 256, 3, 2, False), *((256, 256, 5, 1, False),) * 5),
    ((256, 512, 5, 2, True), (512, 512, 5, 1, True)),
)


class ConvBN(nn.Module):
    """Conv (no bias) -> batch norm -> hard swish: Paddle's ConvBNLayer."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place: the conv's (or batch norm's) output is fresh and read by nothing else
        return F.hardswish(self.bn(self.conv(x)), inplace=True)

    def fold(self) -> None:
        """Fold the batch norm into the conv (weights and bias computed in float64): one op less."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        conv, bn = self.conv, self.bn
        scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           groups=conv.groups, bias=True)
        with torch.no_grad():
            folded.weight.copy_((conv.weight.double() * scale.reshape(-1, 1, 1, 1)).float())
            folded.bias.copy_((bn.bias.double() - bn.running_mean.double() * scale).float())
        self.conv, self.bn = folded, nn.Identity()


class SqueezeExcite(nn.Module):
    """The channel gate: mean -> 1x1 -> ReLU -> 1x1 -> hard sigmoid."""

    def __init__(self, c: int):
        super().__init__()
        self.reduce = nn.Conv2d(c, c // 4, 1)
        self.expand = nn.Conv2d(c // 4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * (gate * SE_SLOPE + 0.5).clamp_(0.0, 1.0)


class DepthwiseSeparable(nn.Module):
    """Depthwise kxk (stride) -> [SE] -> pointwise 1x1: an LCNet block, and the necks' DP module."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, se: bool = False):
        super().__init__()
        self.dw = ConvBN(cin, cin, k, stride, groups=cin)
        self.se = SqueezeExcite(cin) if se else None
        self.pw = ConvBN(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(x)
        if self.se is not None:
            x = self.se(x)
        return self.pw(x)


class LCNet(nn.Module):
    """PP-LCNet x1.0: returns the maps of stages `first_out`.. (stage 1: stride 4, 64 channels;
    2: stride 8, 128; 3: stride 16, 256; 4: stride 32, 512)."""

    def __init__(self, first_out: int):
        super().__init__()
        self.first_out = first_out
        self.stem = ConvBN(3, 16, 3, 2)
        self.stages = nn.ModuleList(nn.Sequential(*(DepthwiseSeparable(*b) for b in blocks)) for blocks in STAGES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= self.first_out:
                out.append(x)
        return out
