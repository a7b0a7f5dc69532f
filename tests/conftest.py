"""Shared fixtures: the dev set (skipped when absent), rendered text images, loaded models, stacks.

Every test carries one layer marker (pytest.ini lists them): `make test-fast` selects unit and
model tests by them, so a test without one would silently fall out of either selection.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from service import settings as settings_mod
from service.ocr.model import OcrModel, load_model
from service.settings import ROOT
from tests.devset import DEV
from tests.stack import Stack, write_config
from tests.support import render_lines

LAYERS = ("unit", "model", "stack", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a test without a layer marker, so that no selection by marker misses it."""
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(m) for m in LAYERS)]
    if unmarked:
        raise pytest.UsageError(f"tests without a layer marker ({', '.join(LAYERS)}): {unmarked}")


@pytest.fixture(scope="session")
def dev_dir() -> Path:
    if not DEV.is_dir():
        pytest.skip(f"the dev set is absent: {DEV} (it has no redistribution licence, so it is never copied here)")
    return DEV


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

    The one way a test module gets a stack: every stack it starts is stopped by PID when the module
    ends, also when a test or the start itself failed, and its logs are kept in run/test-logs/.
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
