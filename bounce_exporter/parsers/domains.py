"""Recipient domains: one normal form for labels, lookups and the tracker."""

from __future__ import annotations

from functools import lru_cache


def domain_of(recipient: str | None) -> str | None:
    """The recipient's domain, lower-case and IDNA-encoded (A-labels); None without an '@'."""
    if not recipient:
        return None
    _, at, domain = recipient.rpartition("@")
    if not at or not domain:
        return None
    return normalise_domain(domain)


@lru_cache(maxsize=8192)
def normalise_domain(domain: str) -> str:
    """``Müller.Example.`` → ``xn--mller-kva.example``; address literals and junk kept lower-cased."""
    domain = domain.strip().rstrip(".").lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain
