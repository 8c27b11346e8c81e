"""Classification of a reply: the catalog (``config/catalog.yaml``), the classifier (soft or hard,
a reason category), and ``explain`` (what a reply means and what to do)."""
