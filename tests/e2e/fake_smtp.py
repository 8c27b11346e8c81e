"""A fake remote SMTP server that answers per recipient domain from a scenario, and records it.

    scenario = {
        "ok.example": "250",
        "nouser.example": "550 5.1.1 User unknown",            # answered at RCPT TO
        "spam.example": "DATA:554 5.7.1 Message rejected",      # RCPT accepted, answered at end of DATA
        "flaky.example": ["431 4.3.1 Try later", "431 4.3.1 Try later", "250"],
    }

A string is the answer to every RCPT attempt for that domain. A list gives the answers to the
domain's successive RCPT attempts (counted over all its recipients), the last one repeating.
A 2xx answer (with or without the "DATA:" prefix) means: accept at RCPT, answer it at end of
DATA. "DATA:<reply>" means: accept at RCPT, answer <reply> at end of DATA. Anything else is
answered at RCPT. Domains not in the scenario get `default` (250).

Every answer given is recorded, per domain, as an Answer(stage, code, enhanced, text,
recipient, time); stage is "RCPT" or "DATA" (an accepting RCPT is recorded too, as a "RCPT"
answer with a 2xx code). `record()` returns a copy, safe to call from any thread.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Self

FAKE_HOSTNAME = "fake-remote.bounce-e2e.test"  # must differ from the Postfix lab's myhostname

_REPLY_RE = re.compile(r"^\s*(?P<code>[2-5]\d\d)(?:[ -](?P<rest>.*))?$", re.DOTALL)
_ENHANCED_RE = re.compile(r"^(?P<enh>[245]\.\d{1,3}\.\d{1,3})(?:\s+(?P<text>.*))?$", re.DOTALL)

Reply = str | Sequence[str]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True, slots=True)
class Answer:
    stage: str  # "RCPT" | "DATA"
    code: str  # "431"
    enhanced: str | None  # "4.3.1", or None when the reply had no enhanced status code
    text: str  # "Insufficient system storage"
    recipient: str
    time: float

    @property
    def ends_attempt(self) -> bool:
        """True for the verdict of one delivery attempt: a non-2xx RCPT answer, or the DATA answer."""
        return self.stage == "DATA" or not self.code.startswith("2")

    @property
    def reply(self) -> str:
        return " ".join(part for part in (self.code, self.enhanced, self.text) if part)


@dataclass(frozen=True, slots=True)
class _Plan:
    stage: str  # stage at which the verdict is given
    code: str
    enhanced: str | None
    text: str


def parse_reply(spec: str) -> _Plan:
    stage = "RCPT"
    if spec.upper().startswith("DATA:"):
        stage, spec = "DATA", spec[5:]
    match = _REPLY_RE.match(spec)
    if not match:
        raise ValueError(f"not an SMTP reply: {spec!r}")
    code, rest = match["code"], (match["rest"] or "").strip()
    enhanced, text = None, rest
    enh = _ENHANCED_RE.match(rest)
    if enh:
        enhanced, text = enh["enh"], (enh["text"] or "").strip()
    if code.startswith("2"):
        stage = "DATA"  # a 2xx verdict is only final once the message is accepted
        if not rest:
            enhanced, text = "2.0.0", "Ok: queued"
    return _Plan(stage, code, enhanced, text)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(">").lower()


class _Handler:
    def __init__(self, scenario: Mapping[str, Reply], default: str) -> None:
        self._plans: dict[str, list[_Plan]] = {}
        for domain, spec in scenario.items():
            specs = [spec] if isinstance(spec, str) else list(spec)
            if not specs:
                raise ValueError(f"empty answer list for {domain}")
            self._plans[domain.lower()] = [parse_reply(s) for s in specs]
        self._default = [parse_reply(default)]
        self._attempts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._record: dict[str, list[Answer]] = defaultdict(list)
        self._count = 0

    # -- recording ---------------------------------------------------------------------------
    def _add(self, domain: str, answer: Answer) -> None:
        with self._changed:
            self._record[domain].append(answer)
            self._count += 1
            self._changed.notify_all()

    def record(self) -> dict[str, list[Answer]]:
        with self._lock:
            return {domain: list(answers) for domain, answers in self._record.items()}

    def count(self) -> int:
        with self._lock:
            return self._count

    def wait_for_count_above(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._count > count, timeout=timeout)

    def answer(self, domain: str, spec: Reply) -> None:
        """From now on, answer ``spec`` (as in a scenario) to the domain's RCPT attempts."""
        specs = [spec] if isinstance(spec, str) else list(spec)
        with self._lock:
            self._plans[domain.lower()] = [parse_reply(s) for s in specs]
            self._attempts[domain.lower()] = 0

    # -- aiosmtpd hooks ----------------------------------------------------------------------
    def _next_plan(self, domain: str) -> _Plan:
        with self._lock:
            plans = self._plans.get(domain, self._default)
            index = min(self._attempts[domain], len(plans) - 1)
            self._attempts[domain] += 1
            return plans[index]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        domain = _domain(address)
        plan = self._next_plan(domain)
        if plan.stage == "RCPT":
            self._add(
                domain, Answer("RCPT", plan.code, plan.enhanced, plan.text, address, time.time())
            )
            return " ".join(p for p in (plan.code, plan.enhanced, plan.text) if p)
        self._add(domain, Answer("RCPT", "250", "2.1.5", "Ok", address, time.time()))
        envelope.rcpt_tos.append(address)
        pending = getattr(envelope, "bounce_e2e_data_plans", None)
        if pending is None:
            pending = envelope.bounce_e2e_data_plans = {}
        pending[address] = plan
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        pending: dict[str, _Plan] = getattr(envelope, "bounce_e2e_data_plans", None) or {}
        plans = [pending[r] for r in envelope.rcpt_tos if r in pending]
        # One reply per message: the first refusal wins, else the first acceptance.
        refusals = [p for p in plans if not p.code.startswith("2")]
        plan = (refusals or plans or self._default)[0]
        now = time.time()
        for recipient in envelope.rcpt_tos:
            self._add(
                _domain(recipient),
                Answer("DATA", plan.code, plan.enhanced, plan.text, recipient, now),
            )
        return " ".join(p for p in (plan.code, plan.enhanced, plan.text) if p)


class FakeSMTPServer:
    """aiosmtpd Controller on 127.0.0.1:<free port>, answering per scenario. Use start()/stop()
    or as a context manager."""

    def __init__(
        self,
        scenario: Mapping[str, Reply],
        *,
        default: str = "250",
        host: str = "127.0.0.1",
        server_hostname: str = FAKE_HOSTNAME,
    ) -> None:
        self.scenario = dict(scenario)
        self.host = host
        self.server_hostname = server_hostname
        self._handler = _Handler(scenario, default)
        self._controller = None  # aiosmtpd.controller.Controller
        self.port: int | None = None

    def start(self) -> FakeSMTPServer:
        # Imported here, not at module level: without aiosmtpd the fixtures skip, not error.
        from aiosmtpd.controller import Controller

        last_error: Exception | None = None
        for _ in range(5):  # the free port can be taken between probing and binding: retry
            port = free_port(self.host)
            controller = Controller(
                self._handler,
                hostname=self.host,
                port=port,
                server_hostname=self.server_hostname,
                ident="bounce-e2e fake remote MTA",
            )
            try:
                controller.start()
            except (OSError, RuntimeError, TimeoutError) as exc:  # retried on another port
                last_error = exc
                continue
            self._controller, self.port = controller, port
            return self
        raise RuntimeError(f"fake SMTP server could not start: {last_error!r}")

    def stop(self) -> None:
        if self._controller is not None:
            controller, self._controller = self._controller, None
            controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, domain: str, spec: Reply) -> None:
        """Change a domain's answers while running (say 250 where it said 431 until now)."""
        self._handler.answer(domain, spec)

    # -- what happened -----------------------------------------------------------------------
    def record(self) -> dict[str, list[Answer]]:
        """Copy of every answer given so far, per recipient domain."""
        return self._handler.record()

    def answer_count(self) -> int:
        return self._handler.count()

    def wait_for_new_answers(self, since: int, timeout: float) -> bool:
        """Block until more than `since` answers were given in total, or timeout. True if so."""
        return self._handler.wait_for_count_above(since, timeout)

    def wait_until(
        self, predicate: Callable[[dict[str, list[Answer]]], bool], timeout: float
    ) -> dict:
        """Wait (event-driven, bounded) until predicate(record) holds; return that record."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.answer_count()
            rec = self.record()
            if predicate(rec):
                return rec
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"fake SMTP record never satisfied the predicate: {summarize(rec)}"
                )
            self.wait_for_new_answers(seen, remaining)


# -- helpers over a record ------------------------------------------------------------------------
def attempts(answers: Sequence[Answer]) -> int:
    return sum(1 for a in answers if a.ends_attempt)


def deliveries(answers: Sequence[Answer]) -> int:
    return sum(1 for a in answers if a.stage == "DATA" and a.code.startswith("2"))


def failures(answers: Sequence[Answer]) -> dict[tuple[str, str | None], int]:
    """Count of refusals per (code, enhanced), both stages."""
    out: dict[tuple[str, str | None], int] = defaultdict(int)
    for a in answers:
        if not a.code.startswith("2"):
            out[(a.code, a.enhanced)] += 1
    return dict(out)


def per_recipient(answers: Sequence[Answer], code: str) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for a in answers:
        if a.code == code:
            out[a.recipient.lower()] += 1
    return dict(out)


def summarize(record: Mapping[str, Sequence[Answer]]) -> dict[str, dict[str, int]]:
    return {
        domain: {
            f"{a_stage}:{code}": n for (a_stage, code), n in _stage_code_counts(answers).items()
        }
        for domain, answers in sorted(record.items())
    }


def _stage_code_counts(answers: Sequence[Answer]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = defaultdict(int)
    for a in answers:
        out[(a.stage, a.code)] += 1
    return dict(sorted(out.items()))
