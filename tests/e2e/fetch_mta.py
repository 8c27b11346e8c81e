"""Fetch Debian's Exim and OpenSMTPD for the e2e labs, without installing them system-wide.

    python tests/e2e/fetch_mta.py        # as root; .ci/run calls it before the tests

Both packages conflict with `postfix` (they all provide mail-transport-agent), so they are never
installed: `apt-get download` puts their .debs in a cache folder (reused when the candidate
version is already there) and `dpkg -x` unpacks them into <cache>/root, together with every
library package they depend on that is not installed (e.g. libidn12 for Exim), found by following
the packages' Depends fields. The labs run the binaries from there with LD_LIBRARY_PATH (see
library_path()) and a private configuration.

Also, as the packages' postinst scripts would: the setuid/setgid bits of the unpacked tree are
dropped (exim4 is setuid root; the labs run it as root anyway), and the system users the binaries
look up by their compiled-in names are created when missing: Debian-exim (Exim refuses to start
without it, even with exim_user set in its configuration), opensmtpd and opensmtpq.

Cache folder: $BOUNCE_EXPORTER_MTA_CACHE, default /var/cache/bounce-exporter-e2e.
The module is also imported by the labs for the paths (exim_binary(), smtpd_binary(), ...) and
for not_ready(), which says what is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CACHE_ENV = "BOUNCE_EXPORTER_MTA_CACHE"
DEFAULT_CACHE = "/var/cache/bounce-exporter-e2e"
PACKAGES = ("exim4-daemon-light", "opensmtpd")
# (user, group, home) as Debian's exim4-base and opensmtpd postinst scripts create them.
USERS = (
    ("Debian-exim", "Debian-exim", "/var/spool/exim4"),
    ("opensmtpd", "opensmtpd", "/var/lib/opensmtpd/empty"),
    ("opensmtpq", "opensmtpq", "/var/lib/opensmtpd/empty"),
)
FETCH_HINT = "run `python tests/e2e/fetch_mta.py` as root first"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def root_dir() -> Path:
    """Where the packages are unpacked (dpkg -x)."""
    return cache_dir() / "root"


def exim_binary() -> Path:
    return root_dir() / "usr/sbin/exim4"


def smtpd_binary() -> Path:
    return root_dir() / "usr/sbin/smtpd"


def smtpctl_binary() -> Path:
    return root_dir() / "usr/sbin/smtpctl"


def library_path() -> str:
    """LD_LIBRARY_PATH for the unpacked binaries: every unpacked folder holding a shared library."""
    root = root_dir()
    folders = sorted({p.parent for p in root.glob("**/lib*.so*") if "/usr/share/" not in str(p)})
    return os.pathsep.join(str(f) for f in folders)


def binary_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (library_path(), os.environ.get("LD_LIBRARY_PATH")) if p
    )
    return env


def missing_users() -> list[str]:
    import grp
    import pwd

    missing = []
    for user, group, _home in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            missing.append(user)
        try:
            grp.getgrnam(group)
        except KeyError:
            missing.append(f"group {group}")
    return missing


def not_ready(binaries: tuple[Path, ...]) -> str | None:
    """Why the unpacked MTA cannot run yet (None when it can)."""
    absent = [str(b) for b in binaries if not b.is_file()]
    if absent:
        return f"{', '.join(absent)} not unpacked: {FETCH_HINT}"
    users = missing_users()
    if users:
        return f"system users missing ({', '.join(users)}): {FETCH_HINT}"
    return None


# -- fetching ----------------------------------------------------------------------------------
def _run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


def _installed() -> set[str]:
    out = _run("dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n")
    return {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}


def _candidate(package: str) -> tuple[str, list[list[str]]]:
    """(candidate version, Depends + Pre-Depends as groups of alternatives) from apt-cache."""
    fields: dict[str, str] = {}
    key = None
    for line in _run("apt-cache", "show", "--no-all-versions", package).splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if "Version" not in fields:
        raise SystemExit(f"apt-cache knows no candidate for {package} (apt-get update first?)")
    groups = []
    for field in ("Pre-Depends", "Depends"):
        for group in filter(None, (g.strip() for g in fields.get(field, "").split(","))):
            names = [re.split(r"[\s(:]", alt.strip(), maxsplit=1)[0] for alt in group.split("|")]
            groups.append([n for n in names if n])
    return fields["Version"], groups


def resolve() -> dict[str, str]:
    """The packages to unpack, name -> candidate version: PACKAGES plus the library packages
    (name lib*) they need, directly or through each other, that are not installed."""
    installed = _installed()
    wanted: dict[str, str] = {}
    todo = list(PACKAGES)
    while todo:
        package = todo.pop()
        if package in wanted:
            continue
        version, groups = _candidate(package)
        wanted[package] = version
        for alternatives in groups:
            if any(a in installed or a in wanted for a in alternatives):
                continue
            first = alternatives[0]
            if first.startswith("lib"):  # tools (debconf, adduser, ...) are not needed
                todo.append(first)
    return wanted


def _deb_version(deb: Path) -> tuple[str, str]:
    out = _run("dpkg-deb", "--showformat=${Package} ${Version}", "--show", str(deb))
    name, _, version = out.strip().partition(" ")
    return name, version


def download(wanted: dict[str, str]) -> list[Path]:
    debs_dir = cache_dir() / "debs"
    debs_dir.mkdir(parents=True, exist_ok=True)
    have = {}
    for deb in debs_dir.glob("*.deb"):
        try:
            have[_deb_version(deb)] = deb
        except SystemExit:  # a broken download: fetched again
            deb.unlink()
    missing = [f"{p}={v}" for p, v in sorted(wanted.items()) if (p, v) not in have]
    if missing:
        print(f"fetch_mta: apt-get download {' '.join(missing)}", file=sys.stderr)
        # -o APT::Sandbox::User=root: the cache folder is root's; no "_apt cannot access" warning
        _run("apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *missing, cwd=debs_dir)
        have = {_deb_version(deb): deb for deb in debs_dir.glob("*.deb")}
    return [have[(p, v)] for p, v in sorted(wanted.items())]


def unpack(debs: list[Path]) -> None:
    root = root_dir()
    stamp = "\n".join(d.name for d in debs) + "\n"
    stamp_file = root / ".unpacked-from"
    if stamp_file.is_file() and stamp_file.read_text() == stamp:
        return
    fresh = root.with_name("root.new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    for deb in debs:
        _run("dpkg-deb", "-x", str(deb), str(fresh))
    for path in fresh.rglob("*"):  # no setuid/setgid binaries lying around in a cache folder
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o6000:
            path.chmod(path.stat().st_mode & ~0o6000)
    (fresh / ".unpacked-from").write_text(stamp)
    shutil.rmtree(root, ignore_errors=True)
    fresh.rename(root)


def check_libraries() -> None:
    env = binary_env()
    problems = []
    for binary in (exim_binary(), smtpd_binary(), smtpctl_binary()):
        proc = subprocess.run(
            ["ldd", str(binary)], env=env, capture_output=True, text=True, check=False
        )
        missing = [line.strip() for line in proc.stdout.splitlines() if "not found" in line]
        if proc.returncode != 0 or missing:
            problems.append(f"{binary}: {missing or proc.stderr.strip()}")
    if problems:
        raise SystemExit("fetch_mta: unresolved libraries:\n" + "\n".join(problems))


def create_users() -> None:
    import grp
    import pwd

    for user, group, home in USERS:
        try:
            grp.getgrnam(group)
        except KeyError:
            _run("groupadd", "--system", group)
        try:
            pwd.getpwnam(user)
        except KeyError:
            _run("useradd", "--system", "--gid", group, "--no-create-home", "--home-dir", home,
                 "--shell", "/usr/sbin/nologin", user)  # fmt: skip


def main() -> int:
    if os.geteuid() != 0:
        print("fetch_mta: must run as root (system users, cache folder)", file=sys.stderr)
        return 1
    wanted = resolve()
    unpack(download(wanted))
    check_libraries()
    create_users()
    print(f"fetch_mta: {', '.join(f'{p} {v}' for p, v in sorted(wanted.items()))} in {root_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
