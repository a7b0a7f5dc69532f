"""SLANet_plus (PaddleX), the table-structure network RapidTable 0.3.0 ships, in plain PyTorch.

PP-LCNet x1.0 backbone -> CSP-PAN neck (96 channels, 4 levels) -> SLAHead: an attention GRU that
reads the stride-32 feature map and emits, per step, one HTML structure token (50 classes) and an
8-number cell box (4 corners, normalised to the 488x488 input). The ONNX file runs the decoder as a
`Loop`; here it is an ordinary Python loop over plain tensor ops, so that the step bound, early stop
per crop and batching are ours to choose (service/structure/table.py drives it).

Layer order inside each `forward` follows the ONNX node order on purpose: convert_table.py pairs
the graph's convolutions and batch norms with these layers by call order and shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .lcnet import ConvBN, DepthwiseSeparable, LCNet

INPUT_SIZE = 488  # RapidTable pads every crop to 488x488
NUM_CLASSES = 50  # sos + 48 structure tokens + eos
HIDDEN = 256
LOC_DIM = 8


class CSPLayer(nn.Module):
    """Cross-stage partial block with one depthwise Darknet bottleneck (no identity). picodet.py's
    is the same block under other layer names: those names are the keys of each pinned file."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        mid = cout // 2
        self.short = ConvBN(cin, mid, 1)
        self.main = ConvBN(cin, mid, 1)
        self.bottleneck1 = ConvBN(mid, mid, 1)
        self.bottleneck2 = DepthwiseSeparable(mid, mid, k)
        self.final = ConvBN(2 * mid, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = self.short(x)
        main = self.bottleneck2(self.bottleneck1(self.main(x)))
        return self.final(torch.cat((main, short), 1))


class CSPPAN(nn.Module):
    """1x1 to 96 channels per level, top-down (nearest upsampling) then bottom-up; returns the coarsest."""

    def __init__(self, in_channels=(64, 128, 256, 512), c: int = 96, k: int = 5):
        super().__init__()
        self.reduce = nn.ModuleList(ConvBN(cin, c, 1) for cin in in_channels)
        n = len(in_channels)
        self.top_down = nn.ModuleList(CSPLayer(2 * c, c, k) for _ in range(n - 1))
        self.downsample = nn.ModuleList(DepthwiseSeparable(c, c, k, 2) for _ in range(n - 1))
        self.bottom_up = nn.ModuleList(CSPLayer(2 * c, c, k) for _ in range(n - 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        feats = [conv(f) for conv, f in zip(self.reduce, feats)]
        inner = [feats[-1]]
        for j, idx in enumerate(range(len(feats) - 1, 0, -1)):
            low = feats[idx - 1]
            up = F.interpolate(inner[0], size=low.shape[2:], mode="nearest")
            inner.insert(0, self.top_down[j](torch.cat((up, low), 1)))
        out = inner[0]
        for j in range(len(feats) - 1):
            out = self.bottom_up[j](torch.cat((self.downsample[j](out), inner[j + 1]), 1))
        return out


class SLAHead(nn.Module):
    """Attention GRU decoder: the weights, and one step of it (the loop lives in table.py)."""

    def __init__(self, c: int = 96):
        super().__init__()
        self.i2h = nn.Linear(c, HIDDEN, bias=False)
        self.h2h = nn.Linear(HIDDEN, HIDDEN)
        self.score = nn.Linear(HIDDEN, 1, bias=False)
        self.gru_ih = nn.Linear(c + NUM_CLASSES, 3 * HIDDEN)
        self.gru_hh = nn.Linear(HIDDEN, 3 * HIDDEN)
        self.structure1 = nn.Linear(HIDDEN, HIDDEN)
        self.structure2 = nn.Linear(HIDDEN, NUM_CLASSES)
        self.loc1 = nn.Linear(HIDDEN, HIDDEN)
        self.loc2 = nn.Linear(HIDDEN, LOC_DIM)

    def step(self, hidden: torch.Tensor, onehot: torch.Tensor, fea: torch.Tensor,
             fea_proj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder step: (new hidden state, structure logits). `fea_proj` is i2h(fea), which
        does not change between steps and so is computed once per crop."""
        res = torch.tanh(fea_proj + self.h2h(hidden).unsqueeze(1))
        alpha = torch.softmax(self.score(res), dim=1)  # (B, T, 1) over the T feature positions
        context = torch.bmm(alpha.transpose(1, 2), fea).squeeze(1)
        gx = self.gru_ih(torch.cat((context, onehot), 1))
        gh = self.gru_hh(hidden)
        xr, xz, xc = gx.chunk(3, 1)
        hr, hz, hc = gh.chunk(3, 1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        c = torch.tanh(xc + r * hc)
        hidden = (hidden - c) * z + c
        return hidden, self.structure2(self.structure1(hidden))

    def locations(self, hidden: torch.Tensor) -> torch.Tensor:
        """Cell boxes (…, 8) in [0, 1] from the hidden states of the steps that need one."""
        return torch.sigmoid(self.loc2(self.loc1(hidden)))

    def forward(self, fea: torch.Tensor) -> torch.Tensor:  # used only to trace the call order
        hidden = fea.new_zeros(fea.shape[0], HIDDEN)
        onehot = fea.new_zeros(fea.shape[0], NUM_CLASSES)
        fea_proj = self.i2h(fea)
        hidden, _ = self.step(hidden, onehot, fea, fea_proj)
        return self.locations(hidden)


class SLANetPlus(nn.Module):
    """Backbone + neck + decoder weights. `encode` gives the decoder's memory for a batch of crops."""

    def __init__(self):
        super().__init__()
        self.backbone = LCNet(first_out=1)  # strides 4, 8, 16, 32
        self.neck = CSPPAN()
        self.head = SLAHead()

    def fold(self) -> "SLANetPlus":
        """Batch norms folded into their convolutions, for serving (after load_state_dict: the
        state_dict keeps the graph's own tensors)."""
        for m in self.modules():
            if isinstance(m, ConvBN):
                m.fold()
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 488, 488) normalised crops -> (B, 256, 96) feature sequence (stride 32, row-major)."""
        fea = self.neck(self.backbone(x))
        return fea.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # used only to trace the call order
        return self.head(self.encode(x))
