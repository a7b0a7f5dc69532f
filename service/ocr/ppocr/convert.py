"""Convert the pinned PP-OCR ONNX files into state_dicts for nets.py, plus the rec dictionary.

    python -m service.ocr.ppocr.convert weights

The graphs carry paddle2onnx's generated tensor names, so nothing can be matched by name. Instead
the weights are read in graph order (conv/deconv + bias, batch norm, matmul + bias, layer norm
gamma/beta) and paired with the torch layers in the order a forward pass calls them; every pair is
shape-checked and the result must load with strict=True. This is the one place that imports onnx:
serving reads only the .pt files this writes. Reruns are quick: outputs whose pinned sums already
match are left alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import weights as weights_mod
from ..convert import (Found, call_order, command_line, constants, is_current, metadata_lines, paired_state, report,
                       serialize)
from .files import CLS_FILE, DET_FILE, DICT_FILE, REC_FILE
from .nets import ClsNet, DetNet, RecNet

# converted file -> (ONNX source, network, dummy input shape for the call-order trace)
TARGETS: dict[str, tuple[str, type[nn.Module], tuple[int, ...]]] = {
    DET_FILE: ("PP-OCRv6_det_small.onnx", DetNet, (1, 3, 64, 64)),
    CLS_FILE: ("ch_ppocr_mobile_v2.0_cls_mobile.onnx", ClsNet, (1, 3, 48, 192)),
    REC_FILE: ("PP-OCRv6_rec_small.onnx", RecNet, (1, 3, 48, 64)),
}
DICT_SOURCE = "PP-OCRv6_rec_small.onnx"


class Graph:
    """Constant lookup and Identity-transparent consumers over an ONNX graph."""

    def __init__(self, model):
        g = model.graph
        self.nodes = [n for n in g.node if n.op_type != "Constant"]
        self.const = constants(g)  # the cls graph stores every weight as a Constant node
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def value(self, name: str) -> np.ndarray | None:
        """The constant behind `name`, through Identity and Reshape-of-constant nodes; None if computed."""
        if name in self.const:
            return self.const[name]
        node = self.producer.get(name)
        if node is not None and node.op_type in ("Identity", "Reshape"):
            return self.value(node.input[0])
        return None

    def users(self, name: str) -> list:
        """Nodes reading `name`, looking through Identity nodes."""
        out = []
        for n in self.consumers.get(name, []):
            out.extend(self.users(n.output[0]) if n.op_type == "Identity" else [n])
        return out

    def added_constant(self, name: str) -> np.ndarray | None:
        """The constant of a single `Add` that consumes `name` (how paddle2onnx writes conv/matmul biases)."""
        users = self.users(name)
        if len(users) == 1 and users[0].op_type == "Add":
            for i in users[0].input:
                if (c := self.value(i)) is not None:
                    return c.reshape(-1)
        return None


def read_layers(model) -> list[Found]:
    """Every weighted layer of the graph, in node order."""
    g = Graph(model)
    found: list[Found] = []
    for n in g.nodes:
        if n.op_type in ("Conv", "ConvTranspose"):
            w = g.value(n.input[1])
            b = g.value(n.input[2]) if len(n.input) > 2 else g.added_constant(n.output[0])
            found.append(Found("conv", [w, None if b is None else b.reshape(-1)], where=n.name))
        elif n.op_type == "BatchNormalization":
            eps = next(a.f for a in n.attribute if a.name == "epsilon")
            found.append(Found("bn", [g.value(i) for i in n.input[1:5]], eps, n.name))
        elif n.op_type == "MatMul" and (w := g.value(n.input[1])) is not None:
            found.append(Found("linear", [w.T, g.added_constant(n.output[0])], where=n.name))
        elif n.op_type == "Sqrt":  # decomposed LayerNorm: (x-mean)/sqrt(var+eps) * gamma + beta
            eps = float(next(c for i in g.producer[n.input[0]].input if (c := g.value(i)) is not None))
            (div,) = g.users(n.output[0])
            (mul,) = g.users(div.output[0])
            gamma = next(c for i in mul.input if (c := g.value(i)) is not None)
            beta = g.added_constant(mul.output[0])
            found.append(Found("ln", [gamma, beta], eps, n.name))
    return found


def state_dict_from(model, net: nn.Module, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The graph's layers paired with the module's by call order, loaded with strict=True."""
    state = paired_state(read_layers(model), call_order(net, lambda: net(torch.zeros(shape))))
    net.load_state_dict(state, strict=True)
    return state


def missing(dest: Path) -> list[str]:
    """Converted files that are absent or differ from their pinned sums."""
    return [name for name in (*TARGETS, DICT_FILE) if not is_current(dest / name)]


def convert(dest: Path) -> None:
    """Write every converted file that is missing or differs from its pinned sum."""
    todo = missing(dest)
    if not todo:
        return
    import onnx

    models: dict[str, object] = {}

    def load(source: str):
        if source not in models:
            weights_mod.verify(dest / source)
            models[source] = onnx.load(str(dest / source))
        return models[source]

    for name in todo:
        if name == DICT_FILE:
            chars = metadata_lines(load(DICT_SOURCE))  # split the way RapidOCR splits it
            (dest / name).write_text("\n".join(chars) + "\n", encoding="utf-8")
        else:
            source, net_cls, shape = TARGETS[name]
            (dest / name).write_bytes(serialize(state_dict_from(load(source), net_cls().eval(), shape)))
    report(dest, (*TARGETS, DICT_FILE))


def main() -> None:
    command_line(__doc__, missing, convert)

if __name__ == "__main__":
    main()
