"""Reports for people over old logs: what the pipeline counted, as tables (``report``), and the
progress line of a long one-shot read."""
