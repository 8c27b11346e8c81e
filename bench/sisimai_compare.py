#!/usr/bin/env python3
"""Compare bounce-exporter's classification with Sisimai's over a corpus of reply texts.

Outside the test suite: rerun it after changing config/catalog.yaml to see where the two disagree.

    apt-get install -y libsisimai-perl      # Debian's Sisimai (4.25 on Debian 12)
    python3 bench/sisimai_compare.py        # from the repository root; --all lists agreements too

The corpus: the reply part of every failure line in ../shared/corpus/format-samples.jsonl (every
MTA), PROVIDER_CASES of tests/test_explain.py, and the documented replies of every provider of the
catalog's table (REPLIES of tests/test_provider_replies.py, each with its provider's MX host). Each text goes to
  - Sisimai::Rhost->get for the remote hosts Sisimai has tables for (Google, Microsoft, ...; the
    host is read from "host NAME[" / "H=NAME [" / "relay=NAME"), as Sisimai itself does first, else
  - Sisimai::Reason->match(text): its text patterns, then its status-code table;
and to our classifier through `explain` (the same text rules and codes as `parse` and the metrics).
Sisimai's reasons map to our categories by SISIMAI_TO_OURS (a reason may fit several).
A text is "agreed" when our category is in the mapped set, "sisimai gave up" when Sisimai answers
undefined/onhold, and a "disagreement" otherwise. tests/test_explain.py (SISIMAI_DISAGREEMENTS)
pins every kind of case where we differ on purpose, with the reason; the rest were fixed in the
catalog.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
sys.path.insert(0, str(REPO))

from bounce_exporter.classify.classifier import Classifier
from bounce_exporter.classify.explain import explain

# Sisimai 4.25 reason -> our categories that mean the same (first: the closest).
SISIMAI_TO_OURS: dict[str, tuple[str, ...]] = {
    "authfailure": ("sender_auth",),  # SPF, DKIM or DMARC failed (Sisimai 4.25's reason)
    "badreputation": ("blocklisted",),  # refused for the IP's or domain's reputation
    "blocked": ("blocklisted", "sender_auth"),  # client IP or host refused (block list, PTR, HELO)
    "contenterror": ("protocol",),  # malformed message, bad headers
    "delivered": ("none",),
    "exceedlimit": ("message_too_big",),  # message over a size limit
    "expired": ("expired",),  # gave up after the queue lifetime
    "feedback": ("other",),  # ARF complaint, not a delivery failure
    "filtered": ("policy_blocked", "user_unknown"),  # refused by the recipient's filter
    "hasmoved": ("user_unknown",),  # mailbox moved (551)
    "hostunknown": ("host_unknown",),
    "mailboxfull": ("mailbox_full",),
    "mailererror": ("local",),  # the local mailer program failed
    "mesgtoobig": ("message_too_big",),
    "networkerror": ("network", "dns"),  # Sisimai files DNS failures and loops here too
    "norelaying": ("relay_denied",),  # relay denied
    "notaccept": ("host_unknown", "unavailable"),  # null MX, 521/556, or not taking mail
    "notcompliantrfc": ("protocol",),  # the message breaks RFC 5322
    "onhold": (),  # Sisimai could not decide
    "policyviolation": ("policy_blocked", "spam_content", "virus"),
    "ratelimited": ("rate_limited",),
    "rejected": ("sender_rejected",),  # envelope sender refused
    "requireptr": ("sender_auth",),  # no PTR record for the sending IP
    # AUTH, TLS, and (4.25 has no AuthFailure yet: Sisimai 5 does) SPF/DKIM/DMARC failures
    "securityerror": ("smtp_auth", "tls", "sender_auth"),
    "spamdetected": ("spam_content",),
    "speeding": ("rate_limited",),
    "suspend": ("mailbox_inactive",),  # mailbox disabled or suspended
    "syntaxerror": ("protocol",),
    "systemerror": ("unavailable", "local"),  # the other side's (or our) system failed
    "systemfull": ("system_full",),
    "toomanyconn": ("rate_limited",),  # too many connections or recipients
    "undefined": (),  # Sisimai gave up
    "userunknown": ("user_unknown",),
    "vacation": ("other",),
    "virusdetected": ("virus",),
}
GAVE_UP = {"undefined", "onhold", ""}

# Read each line "rhost TAB code TAB enhanced TAB text"; print "rhost-reason TAB match-reason".
PERL = r"""
use strict; use warnings;
use Sisimai::Reason; use Sisimai::Rhost;
package FakeData;  # the fields Sisimai::Rhost::* read from a Sisimai::Data object
sub new { my ($class, %f) = @_; return bless {%f}, $class }
for my $f (qw(reason replycode diagnosticcode deliverystatus rhost smtpcommand action)) {
    no strict 'refs'; *{"FakeData::$f"} = sub { return $_[0]->{$f} // '' };
}
package main;
binmode STDIN, ':utf8'; binmode STDOUT, ':utf8';
while (my $line = <STDIN>) {
    chomp $line;
    my ($rhost, $code, $status, $text) = split /\t/, $line, 4;
    my $byhost = '';
    if ($rhost ne '' && Sisimai::Rhost->match($rhost)) {
        my $data = FakeData->new(reason => '', replycode => $code, deliverystatus => $status,
                                 diagnosticcode => $text, rhost => $rhost, action => '');
        $byhost = eval { Sisimai::Rhost->get($data) } // '';
    }
    my $bytext = Sisimai::Reason->match($text) // '';
    print "$byhost\t$bytext\n";
}
"""

_POSTFIX = re.compile(r"status=\w+ \((?P<part>.*)\)\s*$")
_STAT = re.compile(r"\bstat=\"?(?P<part>.*?)\"?$")
_RHOST = re.compile(r"(?:\bhost |\bH=|\brelay=)(?P<host>[A-Za-z0-9][\w.-]*\.[A-Za-z]{2,})\.?"
                    r"(?:\[| \[|,)")


def reply_part(line: str, code: str | None) -> str:
    """The reply (or error) part of a log line, as a bounce's Diagnostic-Code would hold it."""
    for pattern in (_POSTFIX, _STAT):
        found = pattern.search(line)
        if found:
            return found.group("part")
    if code:
        found = re.search(r"(?:^|[:(\",]\s*)(" + code + r")[ -]", line)
        if found:
            return line[found.start(1):]
    return re.split(r"\]: ", line)[-1]  # after a syslog header "prog[pid]: "


def corpus() -> list[tuple[str, str]]:
    """(origin, text): the format samples' failure replies, then the provider cases."""
    classifier = Classifier.load()
    texts: list[tuple[str, str]] = []
    with open(CORPUS / "format-samples.jsonl", encoding="utf-8") as f:
        for raw in f:
            sample = json.loads(raw)
            if sample["expect"]["soft"] is None:
                continue
            code = explain(sample["line"], classifier).code
            texts.append((f"sample:{sample['mta']}", reply_part(sample["line"], code)))
    from tests.test_explain import PROVIDER_CASES
    from tests.test_provider_replies import REPLIES

    texts += [("provider", case[0]) for case in PROVIDER_CASES]
    texts += [(f"reply:{provider}", f"host {host}[192.0.2.1] said: {text}")
              for provider, host, text, _ in REPLIES]
    seen: set[str] = set()
    return [(origin, text) for origin, text in texts if not (text in seen or seen.add(text))]


def sisimai(rows: list[tuple[str, str | None, str | None, str]]) -> list[tuple[str, str]]:
    """(rhost reason, text reason) per (rhost, code, enhanced, text)."""
    if shutil.which("perl") is None:
        sys.exit("perl is not installed")
    check = subprocess.run(["perl", "-MSisimai::Reason", "-e", "1"], capture_output=True,
                           check=False)
    if check.returncode != 0:
        sys.exit("Sisimai is not installed: apt-get install -y libsisimai-perl")
    feed = "".join("\t".join((rhost, code or "", enhanced or "",
                              " ".join(text.split()))) + "\n"
                   for rhost, code, enhanced, text in rows)
    result = subprocess.run(["perl", "-e", PERL], input=feed, capture_output=True, text=True,
                            check=True)
    return [tuple(line.split("\t")) for line in result.stdout.splitlines()]  # type: ignore[misc]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="list agreements too")
    args = parser.parse_args()
    classifier = Classifier.load()
    texts = corpus()
    ours = [explain(text, classifier) for _, text in texts]
    rows = []
    for (_, text), e in zip(texts, ours, strict=True):
        host = _RHOST.search(text)
        rows.append((host.group("host").lower() if host else "", e.code, e.enhanced, text))
    theirs = sisimai(rows)

    tally: Counter[str] = Counter()
    lines: list[str] = []
    for (origin, text), e, (byhost, bytext) in zip(texts, ours, theirs, strict=True):
        reason = byhost or bytext
        source = "rhost" if byhost else "text"
        if reason in GAVE_UP:
            verdict = "sisimai gave up"
        elif e.category in SISIMAI_TO_OURS.get(reason, ()):
            verdict = "agree"
        else:
            verdict = "DISAGREE"
        tally[verdict] += 1
        if verdict != "agree" or args.all:
            lines.append(f"{verdict:15} ours={e.category:15} sisimai={reason or 'undefined'}"
                         f" ({source}) [{origin}] {' '.join(text.split())[:110]}")
    for line in sorted(lines):
        print(line)
    print(f"\n{len(texts)} texts: {tally['agree']} agree, {tally['DISAGREE']} disagree, "
          f"Sisimai gave up on {tally['sisimai gave up']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
