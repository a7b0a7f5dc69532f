"""What every ONNX -> PyTorch converter shares (ppocr, the layout and the table networks).

paddle2onnx names tensors after Paddle's generated variables, so no layer can be matched by name.
Each converter reads its graph's weighted layers in node order (`Found`); here they are paired
with the torch layers in the order one forward pass calls them, every pair is shape-checked, and
the state_dict must load with strict=True. The files written have the same bytes on every run,
which is what lets weights/SHA256SUMS pin them.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import weights as weights_mod

WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.Linear, nn.LayerNorm)


@dataclass
class Found:
    """One layer's tensors as the graph stores them, in torch layout."""

    kind: str  # "conv" | "bn" | "linear" | "ln"
    tensors: list[np.ndarray | None]
    eps: float | None = None
    where: str = ""


def constants(graph) -> dict[str, np.ndarray]:
    """Every initializer's and Constant node's value by tensor name (paddle2onnx writes either)."""
    from onnx import numpy_helper

    const = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            const[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return const


def metadata_lines(model, key: str = "character") -> list[str]:
    """A metadata entry split into lines: how the Rapid* wheels store a vocabulary or class list."""
    meta = {p.key: p.value for p in model.metadata_props}
    return meta[key].splitlines()


def call_order(net: nn.Module, forward: Callable[[], object]) -> list[tuple[str, nn.Module]]:
    """The weighted leaf layers of `net` in the order `forward()` calls them."""
    names = {m: name for name, m in net.named_modules()}
    order: list[tuple[str, nn.Module]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append((names[m], m)))
             for m in net.modules() if isinstance(m, WEIGHTED)]
    with torch.inference_mode():
        forward()
    for h in hooks:
        h.remove()
    return order


def tensor(a: np.ndarray | None, like: torch.Tensor | None, where: str) -> torch.Tensor:
    """`a` as a float32 tensor of `like`'s shape, or an error naming the layer pair."""
    if a is None or like is None:
        raise ValueError(f"{where}: graph has {'no' if a is None else 'a'} tensor where the module has "
                         f"{'none' if like is None else tuple(like.shape)}")
    if tuple(a.shape) != tuple(like.shape):
        raise ValueError(f"{where}: graph shape {a.shape} != module shape {tuple(like.shape)}")
    return torch.from_numpy(np.array(a, dtype=np.float32, order="C"))  # a C-order copy: bytes stay deterministic


def paired_state(found: list[Found], order: list[tuple[str, nn.Module]]) -> dict[str, torch.Tensor]:
    """The state_dict entries of the module layers in `order`, taken from the graph layers in
    `found` pair by pair; every kind, epsilon and shape must agree."""
    if len(found) != len(order):
        raise ValueError(f"graph has {len(found)} weighted layers, module calls {len(order)}")
    state: dict[str, torch.Tensor] = {}
    for f, (name, m) in zip(found, order):
        where = f"{f.where} -> {name}"
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if f.kind != ("linear" if isinstance(m, nn.Linear) else "conv"):
                raise ValueError(f"{where}: graph layer is a {f.kind}")
            state[f"{name}.weight"] = tensor(f.tensors[0], m.weight, where)
            if m.bias is not None or (len(f.tensors) > 1 and f.tensors[1] is not None):
                state[f"{name}.bias"] = tensor(f.tensors[1], m.bias, where)
        elif isinstance(m, nn.BatchNorm2d):
            if f.kind != "bn" or abs(f.eps - m.eps) > 1e-9:
                raise ValueError(f"{where}: expected batch norm with eps {m.eps}, got {f.kind} {f.eps}")
            for key, a in zip(("weight", "bias", "running_mean", "running_var"), f.tensors):
                state[f"{name}.{key}"] = tensor(a, getattr(m, key), where)
            state[f"{name}.num_batches_tracked"] = torch.tensor(0)
        else:
            if f.kind != "ln" or abs(f.eps - m.eps) > 1e-9:
                raise ValueError(f"{where}: expected layer norm with eps {m.eps}, got {f.kind} {f.eps}")
            state[f"{name}.weight"] = tensor(f.tensors[0], m.weight, where)
            state[f"{name}.bias"] = tensor(f.tensors[1], m.bias, where)
    return state


def serialize(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def is_current(path: Path) -> bool:
    """The file is there and is the one SHA256SUMS pins."""
    try:
        weights_mod.verify(path)
        return True
    except weights_mod.WeightsError:
        return False


def report(dest: Path, names: tuple[str, ...]) -> None:
    """Check each written file against its pin; print the sum of one not pinned yet (a new model)."""
    pinned = weights_mod.expected_sums()
    for name in names:
        if name in pinned:
            weights_mod.verify(dest / name)
            print(f"ok  {name}")
        else:
            print(f"{weights_mod.sha256_file(dest / name)}  {name}  (not pinned yet)")


def command_line(doc: str, missing: Callable[[Path], list[str]], convert: Callable[[Path], None]) -> None:
    """A converter's command: `DEST` writes what is missing or stale there (default: weights/);
    `--check` only says whether anything is (exit 1), which is how `make weights` skips onnx."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("dest", type=Path, nargs="?", default=weights_mod.SUMS_FILE.parent)
    parser.add_argument("--check", action="store_true", help="exit 1 if a converted file is missing or stale")
    args = parser.parse_args()
    if args.check:
        raise SystemExit(1 if missing(args.dest) else 0)
    convert(args.dest)
