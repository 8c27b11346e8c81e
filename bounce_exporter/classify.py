"""Classification of a reply: soft or hard, and a reason category from the code catalog.

Placeholder: replaced by the catalog-backed classifier."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Classification:
    kind: str | None  # "soft" | "hard" | None (sent)
    category: str  # one of the catalog's categories
