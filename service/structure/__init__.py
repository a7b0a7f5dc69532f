"""Document structure: layout regions and tables, from models rebuilt in PyTorch."""
