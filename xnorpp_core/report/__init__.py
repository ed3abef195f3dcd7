"""Rendering results beside the paper: ``tables`` (Tables 1-3), ``seeds`` (mean ± std and paired t
intervals over seeds), ``curves`` (training curves), ``protocol_analysis`` (the protocol study's
tables, figures and analysis text), ``machine`` (one line naming the machine of a result),
``findings`` (each artifact's paper value, ours and verdict) and ``generated`` (results/REPORT.md and
the generated blocks of README.md and docs/)."""
