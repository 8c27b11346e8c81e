"""The delivery event: what every per-MTA parser produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("sent", "deferred", "bounced", "expired")


@dataclass(slots=True)
class DeliveryEvent:
    """One delivery attempt (or one expiry, or one deferral without attempt) for one recipient, as
    the MTA logged it."""

    time: float  # Unix seconds, from the log line's own timestamp
    mta: str  # "postfix", "exim", ...
    queue_id: str | None
    recipient: str | None
    domain: str | None  # lower-case, IDNA A-label; None when the line names no recipient
    status: str  # one of STATUSES
    code: str | None  # basic reply code "431", or None when no SMTP reply was received
    enhanced: str | None  # enhanced status code "4.3.1", or None
    text: str  # the reply or error text
    # the host the MTA was talking to, as it logged it (Postfix relay=, Exim H=, OpenSMTPD relay=,
    # Sendmail relay=, Exchange FQDN=): lower case, without port or brackets; an IP address when
    # only that was logged; None when the line names none. Says which provider answered.
    relay: str | None = None
    # a deferral the MTA decided without contacting any server (its retry time not reached, the
    # destination marked down): why, as a short slug ("retry_time_not_reached",
    # "destination_suspended"). None for an attempt, and for every other status. Such an event
    # is no attempt: it is counted in bounce_deferrals_without_attempt_total only, never as an
    # attempt or failure of its domain, and the deferral tracker passes over it.
    without_attempt: str | None = None
