"""The three PP-OCR networks that RapidOCR 3.10.0 runs by default, in deploy form.

Deploy form means what the shipped ONNX graphs hold: batch norms, RepDW branches and dilated
large-kernel branches are already folded into single convolutions, so each module here has exactly
the tensors of its graph (convert.py copies them in graph order and `load_state_dict(strict=True)`
proves the match). Layer order inside each `forward` follows the ONNX node order on purpose:
the converter pairs tensors with layers by call order.

- det: PP-OCRv6 small = PPLCNetV4 backbone + RepLK FPN (96) + DB head (probability branch only).
- cls: ch_ppocr_mobile_v2.0 = MobileNetV3-small x0.35 + fc, the 0°/180° line classifier.
- rec: PP-OCRv6 small = PPLCNetV4 (rec strides) + light-SVTR neck + CTC linear head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _hardsigmoid(x: torch.Tensor, slope: float) -> torch.Tensor:
    # Paddle's hardsigmoid takes a slope: 1/6 in the LCNetV4 SE (= torch's), 0.2 in the FPN and cls SEs.
    return F.hardsigmoid(x) if slope == 1 / 6 else (x * slope + 0.5).clamp_(0.0, 1.0)


_ACTS = {"relu": F.relu, "gelu": F.gelu}


def conv_act(conv: nn.Conv2d, x: torch.Tensor, act: str) -> torch.Tensor:
    """act(conv(x)), act "relu" or "gelu", in one oneDNN call for channels_last CPU tensors.

    The activation then runs on the accumulator while it is still in cache instead of as a pass of
    its own over the output: the stems' and the LCNetV4 blocks' largest tensors. ReLU gives the same
    bits either way (rounding keeps the sign); fused GELU is computed before the rounding to bf16,
    so it may differ from the unfused one in the last bit (LCNetV4Block.fused_gelu). Under CPU
    autocast the call is cast as autocast would cast a convolution."""
    if x.device.type != "cpu" or not x.is_contiguous(memory_format=torch.channels_last):
        return _ACTS[act](conv(x))
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    bias = None if conv.bias is None else conv.bias.to(dtype)
    return torch.ops.mkldnn._convolution_pointwise(x.to(dtype), conv.weight.to(dtype), bias, conv.padding,
                                                   conv.stride, conv.dilation, conv.groups, act, [], "none")


class SqueezeExcite(nn.Module):
    """Channel gate: mean -> 1x1 -> ReLU -> 1x1 -> hard sigmoid; `residual` gives x + x*gate (FPN's RSE)."""

    def __init__(self, channels: int, slope: float, residual: bool = False):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 4, 1)
        self.expand = nn.Conv2d(channels // 4, channels, 1)
        self.slope, self.residual = slope, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = _hardsigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))), self.slope)
        return x + x * gate if self.residual else x * gate


class Stem(nn.Module):
    """Stride-4 stem: conv/2, then (two 2x2 convs | 2x2 max pool) concatenated, conv/2, 1x1; out = 2c channels."""

    def __init__(self, c: int):
        super().__init__()
        self.stem1 = nn.Conv2d(3, c, 3, 2, 1)
        self.stem2a = nn.Conv2d(c, c // 2, 2)
        self.stem2b = nn.Conv2d(c // 2, c, 2)
        self.stem3 = nn.Conv2d(2 * c, c, 3, 2, 1)
        self.stem4 = nn.Conv2d(c, 2 * c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Paddle's SAME padding for even kernels pads right/bottom only. Zero padding is exact for the
        # max pool too, because its input is a ReLU output (>= 0); one padded copy serves both.
        p = F.pad(conv_act(self.stem1, x, "relu"), (0, 1, 0, 1))
        branch = conv_act(self.stem2b, F.pad(conv_act(self.stem2a, p, "relu"), (0, 1, 0, 1)), "relu")
        # 2x2/1 max pool as elementwise maxima, rows then columns: same values, far cheaper than
        # max_pool2d on CPU.
        rows = torch.maximum(p[:, :, :-1], p[:, :, 1:])
        pooled = torch.maximum(rows[:, :, :, :-1], rows[:, :, :, 1:])
        x = conv_act(self.stem3, torch.cat((pooled, branch), 1), "relu")
        return conv_act(self.stem4, x, "relu")


class LCNetV4Block(nn.Module):
    """Depthwise 3x3 (folded RepDW) [+ SE], then 1x1 (2x) -> GELU -> 1x1, residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int | tuple[int, int] = 1, se: bool = False):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin)
        self.se = SqueezeExcite(cin, 1 / 6) if se else None
        self.pw1 = nn.Conv2d(cin, 2 * cin, 1)
        self.pw2 = nn.Conv2d(2 * cin, cout, 1)
        self.residual = stride == 1 and cin == cout
        # GELU fused into pw1 (conv_act): faster, and not bit-identical in bf16; set by fuse_gelu.
        self.fused_gelu = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(x)
        if self.se is not None:
            x = self.se(x)
        y = self.pw2(conv_act(self.pw1, x, "gelu") if self.fused_gelu else F.gelu(self.pw1(x)))
        return x + y if self.residual else y


def fuse_gelu(net: nn.Module) -> None:
    """Every LCNetV4 block of `net` computes its GELU inside its first 1x1 convolution (conv_act)."""
    for block in net.modules():
        if isinstance(block, LCNetV4Block):
            block.fused_gelu = True


def _stage(cin: int, cout: int, n: int, stride: int | tuple[int, int], se_at: tuple[int, ...]) -> nn.Sequential:
    """n blocks; the first changes channels/stride unless cin == cout; se_at lists 0-based block indexes."""
    blocks = [LCNetV4Block(cin if i == 0 else cout, cout, stride if i == 0 else 1, i in se_at) for i in range(n)]
    return nn.Sequential(*blocks)


class DetNet(nn.Module):
    """Image (N,3,H,W), H and W multiples of 32 -> text probability map (N,1,H,W)."""

    def __init__(self):
        super().__init__()
        self.stem = Stem(24)
        self.stages = nn.ModuleList([
            _stage(48, 48, 2, 1, (0,)),
            _stage(48, 96, 3, 2, (1,)),
            _stage(96, 192, 5, 2, (1, 3)),
            _stage(192, 384, 3, 2, (1,)),
        ])
        # FPN, listed deepest first as the graph runs it.
        self.ins = nn.ModuleList(nn.Conv2d(c, 96, 1, bias=False) for c in (384, 192, 96, 48))
        self.ins_se = nn.ModuleList(SqueezeExcite(96, 0.2, residual=True) for _ in range(4))
        self.inp_dw = nn.ModuleList(nn.Conv2d(96, 96, 7, 1, 3, groups=96) for _ in range(4))
        self.inp = nn.ModuleList(nn.Conv2d(96, 24, 1, bias=False) for _ in range(4))
        self.inp_se = nn.ModuleList(SqueezeExcite(24, 0.2, residual=True) for _ in range(4))
        self.head_conv = nn.Conv2d(96, 24, 3, 1, 1)
        self.head_up1 = nn.ConvTranspose2d(24, 24, 2, 2)
        self.head_up2 = nn.ConvTranspose2d(24, 1, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        lat = [se(conv(f)) for conv, se, f in zip(self.ins, self.ins_se, reversed(feats))]  # c5, c4, c3, c2
        for i in range(1, 4):  # top-down: each level adds the 2x nearest upsample of the deeper one
            lat[i] = lat[i] + F.interpolate(lat[i - 1], scale_factor=2.0, mode="nearest")
        outs = [se(pw(dw(t))) for dw, pw, se, t in zip(self.inp_dw, self.inp, self.inp_se, lat)]
        fuse = torch.cat([F.interpolate(o, scale_factor=float(s), mode="nearest") if s > 1 else o
                          for o, s in zip(outs, (8, 4, 2, 1))], 1)
        y = conv_act(self.head_conv, fuse, "relu")
        y = F.relu(self.head_up1(y))
        return torch.sigmoid(self.head_up2(y))


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BN + activation: the unfolded layers of the cls net and the rec neck."""

    def __init__(self, cin: int, cout: int, k: int | tuple[int, int], stride: int | tuple[int, int] = 1,
                 groups: int = 1, act: type[nn.Module] | None = nn.ReLU):
        pad = (k[0] // 2, k[1] // 2) if isinstance(k, tuple) else k // 2
        layers = [nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        super().__init__(*layers, *([act()] if act else []))


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expand, depthwise k x k, optional SE (slope 0.2), 1x1 project."""

    def __init__(self, cin: int, exp: int, cout: int, k: int, stride: int | tuple[int, int], se: bool,
                 act: type[nn.Module]):
        super().__init__()
        self.expand = ConvBNAct(cin, exp, 1, act=act)
        self.dw = ConvBNAct(exp, exp, k, stride, groups=exp, act=act)
        self.se = SqueezeExcite(exp, 0.2) if se else None
        self.project = ConvBNAct(exp, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.expand(x))
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class ClsNet(nn.Module):
    """Line crop (N,3,48,192) -> probabilities (N,2) of ["0", "180"]."""

    # (in, expanded, out, kernel, stride, SE, activation), as in the graph.
    BLOCKS = (
        (8, 8, 8, 3, (2, 1), True, nn.ReLU), (8, 24, 8, 3, (2, 1), False, nn.ReLU), (8, 32, 8, 3, 1, False, nn.ReLU),
        (8, 32, 16, 5, (2, 1), True, nn.Hardswish), (16, 88, 16, 5, 1, True, nn.Hardswish),
        (16, 88, 16, 5, 1, True, nn.Hardswish), (16, 40, 16, 5, 1, True, nn.Hardswish),
        (16, 48, 16, 5, 1, True, nn.Hardswish), (16, 104, 32, 5, (2, 1), True, nn.Hardswish),
        (32, 200, 32, 5, 1, True, nn.Hardswish), (32, 200, 32, 5, 1, True, nn.Hardswish),
    )

    def __init__(self):
        super().__init__()
        self.stem = ConvBNAct(3, 8, 3, 2, act=nn.Hardswish)
        self.blocks = nn.Sequential(*(InvertedResidual(*b) for b in self.BLOCKS))
        self.last = ConvBNAct(32, 200, 1, act=nn.Hardswish)
        self.fc = nn.Linear(200, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.last(self.blocks(self.stem(x))), 2, 2)
        return torch.softmax(self.fc(x.mean((2, 3))), 1)


class SvtrBlock(nn.Module):
    """Pre-LN transformer block: global multi-head self-attention over all time steps, then an MLP (SiLU)."""

    def __init__(self, dim: int = 120, heads: int = 8, mlp: int = 240):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v)  # scale = head_dim**-0.5, as in the graph
        x = x + self.proj(att.transpose(1, 2).reshape(n, t, c))
        return x + self.fc2(F.silu(self.fc1(self.norm2(x))))


class RecNet(nn.Module):
    """Line image (N,3,48,W) -> class probabilities (N,T,18710), T = W/8 rounded as the strides do."""

    def __init__(self, classes: int = 18710):
        super().__init__()
        self.stem = Stem(48)
        self.blocks = nn.Sequential(
            _stage(96, 96, 3, 1, (0,)),
            _stage(96, 192, 7, (2, 1), (1, 3, 5)),
            _stage(192, 384, 3, (2, 1), (1,)),
        )
        self.skip = ConvBNAct(384, 120, 1, act=nn.SiLU)
        self.reduce = ConvBNAct(384, 120, 1, act=nn.SiLU)
        self.local = ConvBNAct(120, 120, (1, 7), groups=120, act=nn.SiLU)
        self.svtr = nn.Sequential(SvtrBlock(), SvtrBlock())
        self.norm = nn.LayerNorm(120, eps=1e-6)
        self.head = nn.Linear(120, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(self.blocks(self.stem(x)), (3, 2), (3, 2))  # (N, 384, 1, T)
        skip = self.skip(x)
        z = self.reduce(x)
        z = z + self.local(z)
        z = self.norm(self.svtr(z.flatten(2).transpose(1, 2)))  # (N, T, 120)
        z = z + skip.flatten(2).transpose(1, 2)
        return torch.softmax(self.head(z), 2)
