"""CRAFT's Winograd middle (service/easyocr/winograd.py) against the direct convolutions it replaces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from service.ocr.easyocr import winograd
from service.ocr.easyocr.nets import Craft, fold_batchnorm
from service.ocr.easyocr.pipeline import winograd_applies
from service.settings import ModelSettings

pytestmark = [pytest.mark.model, pytest.mark.skipif(not winograd.available(), reason="NNPACK does not run on this CPU (it needs AVX2)")]


def _craft(seed: int) -> Craft:
    """A CRAFT with random weights and BN statistics, as load() prepares it (folded, channels_last)."""
    torch.manual_seed(seed)
    craft = Craft()
    for module in craft.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return fold_batchnorm(craft.eval().requires_grad_(False)).to(memory_format=torch.channels_last)


def test_pair_max_pool_is_max_pool2d_exactly():
    x = torch.randn(2, 5, 12, 18)
    torch.testing.assert_close(winograd.PairMaxPool()(x), F.max_pool2d(x, 2, 2), rtol=0, atol=0)


def test_winograd_conv_matches_direct_conv_to_rounding():
    conv = torch.nn.Conv2d(16, 24, 3, padding=1).eval()
    x = torch.randn(1, 16, 20, 28)
    with torch.inference_mode():
        torch.testing.assert_close(winograd.WinogradConv2d(conv)(x), conv(x), rtol=1e-4, atol=1e-4)


def test_winograd_conv_refuses_what_nnpack_cannot_run():
    with pytest.raises(ValueError, match="stride 1"):
        winograd.WinogradConv2d(torch.nn.Conv2d(8, 8, 3, padding=6, dilation=6))


@pytest.mark.parametrize("winograd_on, device, precision, expected", [
    (True, "cpu", "fp32", True),
    (False, "cpu", "fp32", False),
    (True, "cuda:0", "fp32", False),
    (True, "cpu", "bf16-det", False),  # NNPACK takes fp32 only
    (True, "cpu", "fp16", False),
])
def test_winograd_applies_to_fp32_detectors_on_cpus_only(winograd_on, device, precision, expected):
    uses, why = winograd_applies(ModelSettings(winograd=winograd_on), torch.device(device), precision)
    assert uses is expected and why


def test_rewritten_craft_keeps_its_keys_and_its_maps():
    direct, fast = _craft(0), winograd.use_winograd(_craft(0))
    assert direct.state_dict().keys() == fast.state_dict().keys()
    assert sum(isinstance(m, winograd.WinogradConv2d) for m in fast.modules()) == 8  # slices 2-4
    x = torch.randn(1, 3, 96, 160).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, got = direct(x), fast(x)
    assert got.shape == want.shape == (1, 2, 48, 80)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
