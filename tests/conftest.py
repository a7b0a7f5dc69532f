"""Shared fixtures: the dev set (skipped when absent), rendered text images, loaded models."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from service import settings as settings_mod
from service.ocr.model import OcrModel, load_model
from service.settings import ROOT
from tests.devset import DEV
from tests.stack import Stack, write_config

FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)


@pytest.fixture(scope="session")
def dev_dir() -> Path:
    if not DEV.is_dir():
        pytest.skip(f"the dev set is absent: {DEV} (it lives in ../shared and is never copied here)")
    return DEV


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in FONT_PATHS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def render_lines(lines: list[str], size: int = 32, margin: int = 40, gap: int = 24) -> np.ndarray:
    """Black text on white, one string per row: an RGB uint8 page whose true content we know."""
    font = _font(size)
    widths = [font.getbbox(text)[2] for text in lines]
    height = margin * 2 + len(lines) * (size + gap)
    img = Image.new("RGB", (max(widths) + margin * 2, height), "white")
    draw = ImageDraw.Draw(img)
    for row, text in enumerate(lines):
        draw.text((margin, margin + row * (size + gap)), text, fill="black", font=font)
    return np.asarray(img)


@pytest.fixture(scope="session")
def render():
    return render_lines


# PARSE_TEST_DEVICE=cuda:0 runs the model tests on that GPU, at the precision production uses there.
TEST_DEVICE = os.environ.get("PARSE_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def load_family() -> Callable[[str, int], OcrModel]:
    """load(family, threads) at the "auto" precision production uses, refusing a silent CPU fallback."""

    def load(family: str, threads: int) -> OcrModel:
        cfg = settings_mod.load()
        model = load_model(dataclasses.replace(cfg.model, family=family, precision="auto"), TEST_DEVICE, threads)
        assert model.device.type == TEST_DEVICE.split(":")[0], f"{TEST_DEVICE} was asked for, {model.device} loaded"
        return model

    return load


@pytest.fixture(scope="module")
def stack_factory(tmp_path_factory):
    """make(instances, **write_config kwargs) -> a started real stack (uWSGI + Nginx on loopback).

    Every stack a module starts is stopped by PID when the module ends, also when a test failed.
    """
    started: list[Stack] = []

    def make(instances: list[dict], **kwargs) -> Stack:
        folder = tmp_path_factory.mktemp("stack")
        stack = Stack(write_config(folder, instances, **kwargs), folder / "run")
        started.append(stack)  # before start(): a start that fails half-way is still torn down
        return stack.start()

    yield make
    for stack in started:
        stack.stop()
        # pytest prunes old temporary folders (also other sessions'); the logs stay in run/test-logs/.
        if stack.layout.logs.is_dir():
            name = f"{stack.run.parent.parent.name}-{stack.run.parent.name}"  # e.g. pytest-7-stack0
            shutil.copytree(stack.layout.logs, ROOT / "run" / "test-logs" / name, dirs_exist_ok=True)
