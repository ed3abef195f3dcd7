"""Rendering results beside the paper: ``tables`` (Tables 1-3), ``curves`` (training curves) and
``protocol_analysis`` (the protocol study's tables, figures and analysis text)."""
