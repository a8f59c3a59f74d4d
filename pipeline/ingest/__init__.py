"""Ingest: export files in, typed review rows out (formats, encodings, column mapping,
validation)."""
