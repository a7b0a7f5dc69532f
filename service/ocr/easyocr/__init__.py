"""EasyOCR (CRAFT detector + english_g2 recognizer) rebuilt in plain PyTorch; the entry point is pipeline.EasyOcr."""
