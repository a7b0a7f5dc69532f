"""The two networks, CRAFT (detector) and english_g2 (recognizer), as plain torch modules.

Module names follow the weight files' keys exactly, so
`load_state_dict(strict=True)` proves the architecture. Nothing here knows about images or text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# torchvision's vgg16_bn layout: conv widths, "M" = 2x2 max-pool.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512]


def _vgg16_bn_layers() -> list[nn.Module]:
    """The first 39 layers of vgg16_bn().features (conv5_2's BN is the last), keeping their indices."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_ch = v
    return layers[:39]


def _indexed(layers: list[nn.Module], start: int, stop: int) -> nn.Sequential:
    """A slice of `layers` whose children are named by their global index, as the weight keys are."""
    seq = nn.Sequential()
    for i in range(start, stop):
        seq.add_module(str(i), layers[i])
    return seq


class _VggBase(nn.Module):
    """CRAFT's backbone.

    The original passes each slice's output on to a slice that starts with an in-place ReLU, so
    the saved outputs of slices 1-3 end up ReLU'd while slice 4's (followed by a max-pool) does not.
    Ending slices 1-3 *with* that ReLU (indices 12, 19, 29) reproduces this without aliasing; the
    parameter keys are unchanged because ReLUs have none.
    """

    def __init__(self) -> None:
        super().__init__()
        layers = _vgg16_bn_layers()
        self.slice1 = _indexed(layers, 0, 13)
        self.slice2 = _indexed(layers, 13, 20)
        self.slice3 = _indexed(layers, 20, 30)
        self.slice4 = _indexed(layers, 30, 39)
        self.slice5 = nn.Sequential(
            nn.MaxPool2d(3, 1, 1),
            nn.Conv2d(512, 1024, 3, padding=6, dilation=6),
            nn.Conv2d(1024, 1024, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s1 = self.slice1(x)
        s2 = self.slice2(s1)
        s3 = self.slice3(s2)
        s4 = self.slice4(s3)
        # winograd.py runs slices 2-4 in NCHW; what reads their outputs wants channels_last (a no-op
        # for tensors already in it).
        s4, s3, s2 = (s.contiguous(memory_format=torch.channels_last) for s in (s4, s3, s2))
        return self.slice5(s4), s4, s3, s2, s1


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution before it, in place; returns `module`.

    Inference only (the running statistics become constants). Saves one full pass over each
    activation map per BN, about a tenth of CRAFT's CPU time; the outputs move by float rounding only.
    """
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for conv_name, bn_name in zip(names, names[1:]):
            conv, bn = seq._modules[conv_name], seq._modules[bn_name]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              conv.dilation, conv.groups, bias=True).to(conv.weight.device)
            with torch.no_grad():
                fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
                fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
            seq._modules[conv_name] = fused
            seq._modules[bn_name] = nn.Identity()
    return module


class _DoubleConv(nn.Module):
    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch + mid_ch, mid_ch, 1), nn.BatchNorm2d(mid_ch), nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Craft(nn.Module):
    """Image batch [B, 3, H, W] (H, W multiples of 32) -> score maps [B, 2, H/2, W/2]: region, affinity."""

    def __init__(self) -> None:
        super().__init__()
        self.basenet = _VggBase()
        self.upconv1 = _DoubleConv(1024, 512, 256)
        self.upconv2 = _DoubleConv(512, 256, 128)
        self.upconv3 = _DoubleConv(256, 128, 64)
        self.upconv4 = _DoubleConv(128, 64, 32)
        self.conv_cls = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc7, s4, s3, s2, s1 = self.basenet(x)
        y = self.upconv1(torch.cat([fc7, s4], dim=1))
        for skip, up in ((s3, self.upconv2), (s2, self.upconv3), (s1, self.upconv4)):
            y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], dim=1))
        # Returned channels-first: the caller reads the two maps as separate planes.
        return self.conv_cls(y)


class _BidirectionalLstm(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(size, size, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(2 * size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.rnn(x)[0])


class Recognizer(nn.Module):
    """english_g2: grey line images [B, 1, 64, W] in [-1, 1] -> CTC logits [B, W/4 - 1, 97]."""

    def __init__(self, num_class: int = 97) -> None:
        super().__init__()
        self.FeatureExtraction = nn.Module()
        self.FeatureExtraction.ConvNet = nn.Sequential(
            nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(128, 128, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(128, 256, 3, 1, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, 1, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True), nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(256, 256, 2, 1, 0), nn.ReLU(inplace=True),
        )
        self.SequenceModeling = nn.Sequential(_BidirectionalLstm(256), _BidirectionalLstm(256))
        self.Prediction = nn.Linear(256, num_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.FeatureExtraction.ConvNet(x)  # [B, 256, 3, T]
        # The original's AdaptiveAvgPool2d((None, 1)) on [B, T, C, 3]: the mean of the 3 rows.
        sequence = features.mean(dim=2).transpose(1, 2)  # [B, T, 256]
        return self.Prediction(self.SequenceModeling(sequence))
