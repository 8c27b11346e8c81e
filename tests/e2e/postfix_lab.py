"""A private, throw-away Postfix instance for end-to-end tests (needs root and the postfix package).

Everything lives under one temporary folder; /etc/postfix is only read (for postfix-files and
dynamicmaps.cf, through the default meta_directory), never written:

    <base>/conf/main.cf, master.cf   config_directory (passed as `-c <base>/conf` to every command)
    <base>/queue                     queue_directory (created by `postfix start` -> post-install)
    <base>/data                      data_directory
    <base>/maillog                   maillog_file, written by the postlogd service

Mail comes in by SMTP (smtplib) to the instance's own smtpd on 127.0.0.1:<free port>, and every
recipient domain is relayed to `smtp:[127.0.0.1]:<relay_port>` (the fake remote server).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping

from .common import alive, live_processes, smtp_answers, smtp_inject
from .fake_smtp import free_port
from .mta_lab import MtaLab
from .requirements import find_binary

LAB_HOSTNAME = "postfix-lab.bounce-e2e.test"

# Queue ids: short (hex, the default) or long (enable_long_queue_ids).
_QID = r"(?:[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]+)"
_LOG_QID_RE = re.compile(rf"postfix[^\s/]*/[\w/-]+\[\d+\]: (?P<qid>{_QID}): ")
_QUEUED_AS_RE = re.compile(rf"queued as (?P<qid>{_QID})")

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{smtpd_listen} inet n   -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixLabError(RuntimeError):
    pass


class PostfixLab(MtaLab):
    """Set up, run and tear down a private Postfix instance. See the module docstring.

    Timing parameters are Postfix time values ("1s", "2s", "5d"); postconf accepts 1s as the
    smallest non-zero queue_run_delay / backoff times. maximal_queue_lifetime=0 means one attempt.
    """

    def __init__(
        self,
        relay_port: int,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        relay_host: str = "127.0.0.1",
        myhostname: str = LAB_HOSTNAME,
        queue_run_delay: str = "1s",
        minimal_backoff_time: str = "1s",
        maximal_backoff_time: str = "2s",
        maximal_queue_lifetime: str = "1d",
        bounce_queue_lifetime: str = "1d",
        extra_main_cf: Mapping[str, str] | None = None,
    ) -> None:
        for name in ("postfix", "postconf", "postqueue", "postsuper"):
            if find_binary(name) is None:
                raise PostfixLabError(f"{name} not found")
        self._make_base(base_dir, "bounce-e2e-postfix-")  # Postfix daemons run as postfix
        self.config_dir = self.base / "conf"
        self.queue_dir = self.base / "queue"
        self.data_dir = self.base / "data"  # left for post-install to create (owned by postfix)
        self.maillog = self.base / "maillog"
        self.relay_host, self.relay_port = relay_host, relay_port
        self.myhostname = myhostname
        self.smtpd_port: int | None = None
        self.master_pid: int | None = None  # while running
        self.last_master_pid: int | None = None
        self.params: dict[str, str] = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base),
            "myhostname": myhostname,
            "mydomain": myhostname.partition(".")[2] or myhostname,
            "myorigin": "$myhostname",
            "mydestination": "",  # nothing is delivered locally: every domain is relayed
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "default_transport": f"smtp:[{relay_host}]:{relay_port}",
            "relay_transport": f"smtp:[{relay_host}]:{relay_port}",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "queue_run_delay": queue_run_delay,
            "minimal_backoff_time": minimal_backoff_time,
            "maximal_backoff_time": maximal_backoff_time,
            "maximal_queue_lifetime": maximal_queue_lifetime,
            "bounce_queue_lifetime": bounce_queue_lifetime,
            "in_flow_delay": "0",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "no",
        }
        self.params.update(extra_main_cf or {})

    # -- commands ------------------------------------------------------------------------------
    def _run(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        binary = find_binary(args[0]) or args[0]
        cmd = [binary, "-c", str(self.config_dir), *args[1:]]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and proc.returncode != 0:
            raise PostfixLabError(
                f"{' '.join(cmd)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}\n"
                f"maillog tail:\n{self.log_tail()}"
            )
        return proc

    def postconf(self, **params: str) -> None:
        """Change main.cf parameters (postconf -e); call reload() for a running instance."""
        self.params.update(params)
        if self.config_dir.exists():
            self._run("postconf", "-e", *(f"{k}={v}" for k, v in params.items()))

    # -- lifecycle -----------------------------------------------------------------------------
    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.config_dir, 0o755)
        # `postfix start` chdirs here before post-install creates the subfolders: root, 0755.
        self.queue_dir.mkdir(exist_ok=True)
        os.chmod(self.queue_dir, 0o755)
        main_cf = "".join(f"{k} = {v}\n" for k, v in self.params.items())
        (self.config_dir / "main.cf").write_text(main_cf)
        listen = f"127.0.0.1:{self.smtpd_port}"
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(smtpd_listen=listen))

    def start(self, timeout: float = 20) -> PostfixLab:
        last_error: Exception | None = None
        for _ in range(3):  # retry if the probed free smtpd port got taken meanwhile
            self.smtpd_port = free_port()
            self.write_config()
            try:
                self._run("postfix", "start", timeout=timeout)
            except PostfixLabError as exc:
                last_error = exc
                self._kill_leftovers()
                continue
            self.master_pid = self.last_master_pid = self._read_master_pid()
            try:
                self.wait_until(lambda: smtp_answers(self.smtpd_port), timeout,
                                what="smtpd to accept connections")
            except BaseException:
                self.stop()
                raise
            return self
        raise PostfixLabError(f"postfix did not start: {last_error}")

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def reload(self) -> None:
        self._run("postfix", "reload")

    def stop(self, timeout: float = 15) -> None:
        """Stop Postfix and make sure no process of the instance survives. Idempotent."""
        pid = self.master_pid  # only the master this object started (never a stale pid file)
        if pid is None:
            return
        try:
            if alive(pid):
                self._run("postfix", "stop", check=False, timeout=timeout)
            deadline = time.monotonic() + timeout
            while live_processes(pgid=pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            self._kill_leftovers(pid)
            self.master_pid = None

    def leftover_processes(self) -> list[int]:
        """Live processes of the last started instance (empty after a clean stop())."""
        return live_processes(pgid=self.last_master_pid) if self.last_master_pid else []

    def _kill_leftovers(self, pid: int | None = None) -> None:
        """SIGKILL what is left of the process group of the master we started."""
        pid = pid or self._read_master_pid()
        if pid is None:
            return
        if live_processes(pgid=pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- mail ----------------------------------------------------------------------------------
    def inject(self, sender: str, recipient: str, subject: str) -> str:
        """Submit one message over SMTP to the lab's smtpd; return its Postfix queue id."""
        reply = smtp_inject(self.smtpd_port, sender, recipient, subject)
        match = _QUEUED_AS_RE.search(reply)
        if not match:
            raise PostfixLabError(f"no queue id in {reply!r}")
        return match["qid"]

    def flush(self) -> None:
        """postqueue -f: attempt every queued message now, ignoring the backoff times."""
        self._run("postqueue", "-f")

    def expire(self, queue_ids: list[str] | None = None) -> list[str]:
        """postsuper -e: force-expire messages; each is returned to its sender at its next
        queue-manager visit, without another delivery attempt. Default: every queued message
        that has a sender and is not force-expired yet (bounce notices, from <>, are left
        alone so they still reach the sender). Returns the ids expired."""
        if queue_ids is None:
            queue_ids = [
                m["queue_id"]
                for m in self.queue()
                if m.get("sender") not in ("", None, "MAILER-DAEMON")  # postqueue's name for <>
                and not m.get("forced_expire")
            ]
        if queue_ids:
            binary = find_binary("postsuper") or "postsuper"
            proc = subprocess.run(
                [binary, "-c", str(self.config_dir), "-e", "-"],
                input="\n".join(queue_ids) + "\n",
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if proc.returncode != 0:
                raise PostfixLabError(f"postsuper -e exited {proc.returncode}: {proc.stderr}")
        return queue_ids

    def drain(self, timeout: float = 20, *, expire: bool = True) -> None:
        """Empty the queue and wait until the log holds everything (see settled()).

        With expire=True, still-queued mail is force-expired (returned to the sender, no more
        attempts) so the queue drains. Each poll also flushes: a queue file the queue manager
        finds locked ("skipped, still being delivered") is otherwise parked for 60 s."""

        def step() -> bool:
            if self.settled():
                return True
            if expire:
                self.expire()
            self.flush()
            return False

        self.wait_until(
            step, timeout, interval=0.25, what="the queue to drain and the log to settle"
        )

    def queue(self) -> list[dict]:
        """The queue as postqueue -j reports it (one dict per message)."""
        out = self._run("postqueue", "-j").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    # -- log -----------------------------------------------------------------------------------
    def settled(self) -> bool:
        """True when the queue is empty and the log says every message it ever saw was removed.

        A message's delivery lines are logged before the queue manager logs "removed" (and
        through the same postlogd socket), so then the log holds every delivery attempt."""
        if self.queue():
            return False
        seen, removed = set(), set()
        for line in self.log_lines():
            m = _LOG_QID_RE.search(line)
            if m:
                seen.add(m["qid"])
                if line.rstrip().endswith(f"{m['qid']}: removed"):
                    removed.add(m["qid"])
        return seen == removed

