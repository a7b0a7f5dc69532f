"""Uploaded files to page images: the decoders and the limits that refuse hostile input."""
