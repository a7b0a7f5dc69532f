"""The dependency rule between the layers, read from the import statements of every module.

The model layer (service/ocr) and the documents layer (service/documents) never import Flask or
the web layer, so the CLI and the benchmarks run them without a web stack; the web layer reaches
a family only through the model interface (service/ocr/model.py), never into its internals.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from service.settings import ROOT

pytestmark = pytest.mark.unit


SERVICE = ROOT / "service"
FAMILIES = ("service.ocr.easyocr", "service.ocr.ppocr")


def imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, relative imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[:len(base) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def modules(folder: str) -> list[Path]:
    return sorted((SERVICE / folder).rglob("*.py"))


def test_the_rule_sees_imports():
    """The reader itself: a relative import in a family resolves to its absolute name."""
    names = imports(SERVICE / "ocr" / "easyocr" / "pipeline.py")
    assert "service.ocr.types" in names and "service.settings" in names, names


@pytest.mark.parametrize("layer", ["ocr", "documents"])
def test_lower_layers_import_no_web(layer):
    bad = {str(p.relative_to(ROOT)): sorted(n for n in imports(p)
                                             if n.split(".")[0] in ("flask", "werkzeug") or n.startswith("service.web"))
           for p in modules(layer)}
    assert not {k: v for k, v in bad.items() if v}


def test_model_layer_imports_no_documents_or_ops():
    bad = {str(p.relative_to(ROOT)): sorted(n for n in imports(p) if n.startswith(("service.documents", "service.ops")))
           for p in modules("ocr")}
    assert not {k: v for k, v in bad.items() if v}


def test_web_reaches_families_only_through_the_interface():
    bad = {str(p.relative_to(ROOT)): sorted(n for n in imports(p) if n.startswith(FAMILIES))
           for p in modules("web")}
    assert not {k: v for k, v in bad.items() if v}


def test_store_layer_imports_only_settings():
    """service/store is the bottom of jobs, keys and results: it knows SQL and the settings, and
    nothing of the web, the jobs, the models or the operations above it."""
    allowed = ("service.settings", "service.store")
    bad = {str(p.relative_to(ROOT)): sorted(n for n in imports(p) if n.startswith("service") and not n.startswith(allowed))
           for p in modules("store")}
    assert not {k: v for k, v in bad.items() if v}
    assert not {str(p.relative_to(ROOT)) for p in modules("store") if any(
        n.split(".")[0] in ("flask", "werkzeug", "torch") for n in imports(p))}


# The structure models' layer: like service/ocr, a model layer under the documents and
# web layers that never imports them. Besides the standard library it uses numpy, torch and
# opencv; onnx and the shared converter core (service.ocr.convert) only in its converters (run by
# `make weights`, never when serving).
STRUCTURE_ALLOWED = ("service.settings", "service.ocr.types", "service.ocr.weights", "service.layout",
                     "service.structure")


def structure_violations(names: set[str], converter: bool) -> list[str]:
    third_party = {"numpy", "torch", "cv2"} | ({"onnx"} if converter else set())
    ok = set(sys.stdlib_module_names) | third_party
    allowed = STRUCTURE_ALLOWED + (("service.ocr.convert",) if converter else ())
    return sorted(n for n in names if not (n.split(".")[0] in ok or n.startswith(allowed)))


def test_structure_layer_imports_only_its_allowed_modules():
    bad = {str(p.relative_to(ROOT)): structure_violations(imports(p), p.name.startswith("convert_"))
           for p in modules("structure")}
    assert modules("structure")
    assert not {k: v for k, v in bad.items() if v}


def test_the_structure_rule_refuses_the_upper_layers():
    names = {"flask", "service.web.app", "service.documents.images", "service.ops.cli", "service.formats.hocr",
             "service.ocr.ppocr.nets", "onnxruntime", "onnx"}
    assert structure_violations(names, converter=False) == sorted(names)
    assert structure_violations({"onnx", "torch.nn", "service.ocr.weights", "service.ocr.convert", "json"},
                                converter=True) == []
    assert structure_violations({"service.ocr.convert"}, converter=False) == ["service.ocr.convert"]
