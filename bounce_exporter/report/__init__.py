"""Reports for people over old logs: what the pipeline counted, as tables (``report``), and the
progress line of a long read on a terminal (``progress``; ``backlog``: serve's catch-up at start)."""
