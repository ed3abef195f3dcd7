"""Thin command-line entry points: ``python -m studies.<name>``."""
