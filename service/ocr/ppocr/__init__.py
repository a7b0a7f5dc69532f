"""PP-OCRv6 (RapidOCR 3.10.0's default det, cls and rec models) in plain PyTorch.

nets.py holds the networks, convert.py turns the pinned ONNX files into their state_dicts,
geometry.py / db.py / recognize.py reproduce RapidOCR's pre- and post-processing, and
pipeline.py puts them behind the OcrModel interface as the "ppocr" family.
"""
