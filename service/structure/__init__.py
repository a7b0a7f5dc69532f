"""Document structure: layout regions and tables (models in layout.py and table.py)."""
