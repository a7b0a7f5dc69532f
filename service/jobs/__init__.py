"""Jobs: long uploads read in the background, page by page, by the serving workers (docs/design.md)."""
