"""What ships under deploy/ is checked by the tools that will read it: promtool (Prometheus config,
recording rules, web config), amtool (Alertmanager config and routes), systemd-analyze (the unit),
pip (the Dockerfile's install step), and the Dockerfile's HEALTHCHECK command run against a live
exporter. Where no tool exists here (no Docker engine, no compose plugin, no Kubernetes, no
Grafana), the files' structure and cross-references are checked: every file a container mounts
exists, ports and paths agree between files. Also: the README documents every config key and flag.

promtool and amtool come with Debian's prometheus and prometheus-alertmanager packages: without
them these tests skip, with BOUNCE_EXPORTER_REQUIRE_E2E=1 they fail. systemd-analyze and the
compose plugin are optional (skipped with the reason where they cannot run).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from bounce_exporter import config as config_module
from bounce_exporter.cli import build_parser
from bounce_exporter.exposition import webconfig
from bounce_exporter.exposition.http import start_server
from bounce_exporter.exposition.webconfig import load_web_config
from bounce_exporter.state import deferrals

from .e2e.requirements import find_binary, require
from .helpers import free_port, wait_until
from .test_web_tls import basic, client_context, get, make_pki

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RECORDING = DEPLOY / "prometheus" / "recording.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
WEB_CONFIG = DEPLOY / "web-config.example.yml"
UNIT = DEPLOY / "systemd" / "bounce-exporter.service"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
COMPOSE = DEPLOY / "container" / "compose.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "bounce-exporter.json"
SIDECAR = DEPLOY / "kubernetes" / "sidecar.yaml"
README = ROOT / "README.md"


def tool(name: str, package: str) -> str:
    require(name, f"{name} is in Debian's {package} package")
    path = find_binary(name)
    assert path is not None
    return path


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


# -- Prometheus --------------------------------------------------------------------------------

@pytest.mark.e2e
def test_promtool_check_config_accepts_prometheus_yml_and_its_rule_files():
    result = run([tool("promtool", "prometheus"), "check", "config", str(PROMETHEUS_YML)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout, result.stdout


@pytest.mark.e2e
def test_promtool_check_rules_accepts_recording_yml():
    result = run([tool("promtool", "prometheus"), "check", "rules", str(RECORDING)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_yml_scrapes_the_exporter_and_loads_both_rule_files():
    doc = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert doc["rule_files"] == ["alerts.yml", "recording.yml"]
    [job] = [j for j in doc["scrape_configs"] if j["job_name"] == "bounce-exporter"]
    assert job["static_configs"][0]["targets"] == ["localhost:39431"]
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "localhost:9093"]


def test_recording_rules_follow_the_naming_convention_and_keep_job():
    rules = yaml.safe_load(RECORDING.read_text())["groups"][0]["rules"]
    for rule in rules:
        level, metric, operation = rule["record"].split(":")
        assert level.startswith("job_") and metric.startswith("bounce_") and operation, rule
        assert "without (instance" in rule["expr"] or rule["expr"].count(":") >= 2, rule


# -- web config ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.e2e
def test_promtool_and_the_exporter_accept_the_example_web_config(pki, tmp_path):
    # The example names server.crt and server.key beside it, as installed.
    shutil.copy(WEB_CONFIG, tmp_path / "web-config.yml")
    shutil.copy(pki.server_crt, tmp_path / "server.crt")
    shutil.copy(pki.server_key, tmp_path / "server.key")
    result = run([tool("promtool", "prometheus"), "check", "web-config", "web-config.yml"],
                 cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_web_config(str(tmp_path / "web-config.yml"))
    assert config.tls is not None and config.tls.min_version == "TLS12"
    # The comment says the example hash is for "change-me".
    auth = config.authenticator()
    assert auth is not None
    import base64

    assert auth.check("Basic " + base64.b64encode(b"prometheus:change-me").decode()) == \
        "prometheus"


# -- Alertmanager -------------------------------------------------------------------------------

@pytest.mark.e2e
def test_amtool_check_config_accepts_alertmanager_yml():
    result = run([tool("amtool", "prometheus-alertmanager"), "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def alert_labels() -> dict[str, dict[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    return {r["alert"]: r["labels"] for r in rules}


ROUTES = {
    "BouncePersistentDeferral431": "postmaster-oncall",
    "BouncePersistentDeferral": "mail-team",
    "BounceHardBounceRatioHigh": "mail-team",
    "BounceMailWaitingLong": "mail-team",
    "BounceExporterLogStalled": "platform-team",
    "BounceExporterSourceDown": "platform-team",
}


@pytest.mark.e2e
def test_every_shipped_alert_is_routed_to_the_intended_receiver():
    amtool = tool("amtool", "prometheus-alertmanager")
    labels = alert_labels()
    assert set(labels) == set(ROUTES), "a new alert needs a route decision here"
    for alert, receiver in ROUTES.items():
        pairs = [f"alertname={alert}"] + [f"{k}={v}" for k, v in labels[alert].items()]
        result = run([amtool, "config", "routes", "test", "--config.file", str(ALERTMANAGER),
                      f"--verify.receivers={receiver}", *pairs])
        assert result.returncode == 0, (alert, result.stdout + result.stderr)


# -- systemd ------------------------------------------------------------------------------------

def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_runs_as_its_own_user_with_adm_state_directory_and_hardening():
    s = unit_settings()
    assert s["User"] == ["bounce-exporter"] and s["DynamicUser"] == ["yes"]
    assert s["SupplementaryGroups"] == ["adm"]
    assert s["StateDirectory"] == ["bounce-exporter"]
    assert "--state.file /var/lib/bounce-exporter/state.json" in s["ExecStart"][0]
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "PrivateDevices": "yes",
                       "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": ""}.items():
        assert s[key] == [value], key
    assert s["RestartPreventExitStatus"] == ["2"]  # a bad config does not restart in a loop


def _verifiable_unit(tmp_path: Path) -> Path:
    """The unit, with ExecStart's binary replaced by a stub when it is not installed here
    (systemd-analyze verify insists that it exists); everything else as shipped."""
    text = UNIT.read_text()
    binary = re.search(r"^ExecStart=(\S+)", text, re.MULTILINE).group(1)
    if not os.access(binary, os.X_OK):
        stub = tmp_path / "bounce-exporter"
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        text = text.replace(f"ExecStart={binary} ", f"ExecStart={stub} ")
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    return unit


def systemd_analyze() -> str:
    path = find_binary("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not found (Debian's systemd package); the unit is not verified")
    probe = run([path, "--version"])
    if probe.returncode != 0:
        pytest.skip(f"systemd-analyze cannot run here: {probe.stderr.strip()}")
    return path


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    unit = _verifiable_unit(tmp_path)
    result = run([systemd_analyze(), "verify", "--man=no", str(unit)])
    # Unknown keys and bad values are only warnings (exit 0): any output fails the test.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path):
    unit = _verifiable_unit(tmp_path)
    result = run([systemd_analyze(), "security", "--offline=yes", "--no-pager", str(unit)])
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"this systemd-analyze has no offline security check: {result.stderr}")
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_the_exporter_runs_under_memory_deny_write_execute(pki, tmp_path):
    """MemoryDenyWriteExecute=yes kills a process that maps memory writable and executable.
    Linux 6.3+ gives the same rule to a process (prctl PR_SET_MDWE): the exporter runs under
    it, follows a log (watchdog), and answers over TLS with basic auth (ssl, bcrypt)."""
    probe_code = ("import ctypes,mmap,sys;libc=ctypes.CDLL(None);"
                  "sys.exit(3) if libc.prctl(65,1,0,0,0) else None\n"
                  "try: mmap.mmap(-1,4096,prot=mmap.PROT_WRITE|mmap.PROT_EXEC)\n"
                  "except PermissionError: sys.exit(0)\nsys.exit(4)")
    probe = run([sys.executable, "-c", probe_code])
    if probe.returncode == 3:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+): MemoryDenyWriteExecute "
                    "compatibility not checked")
    assert probe.returncode == 0, "PR_SET_MDWE did not block a writable+executable mapping"
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config: {{cert_file: {pki.server_crt}, key_file: "
                   f"{pki.server_key}}}\nbasic_auth_users: {{prometheus: "
                   f"'{_hash('pw')}'}}\n")
    port = free_port()
    wrapper = ("import ctypes,os,sys;assert ctypes.CDLL(None).prctl(65,1,0,0,0)==0;"
               "os.execv(sys.executable,[sys.executable]+sys.argv[1:])")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", wrapper, "-m", "bounce_exporter", "serve", "--log.file",
         str(ROOT / "config" / "sample" / "postfix.log"), "--log.from-start",
         "--web.listen-address", f"127.0.0.1:{port}", "--web.config.file", str(web),
         "--state.file", str(tmp_path / "state.json")],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        def answer():
            if proc.poll() is not None:
                raise AssertionError(f"exited with {proc.returncode}: {proc.stderr.read()}")
            try:
                return get(f"https://127.0.0.1:{port}/metrics", client_context(pki),
                           basic("prometheus", "pw"))
            except OSError:
                return None

        status, _, body = wait_until(answer, 30, "the exporter under MDWE to answer")
        assert status == 200 and "bounce_exporter_lines_read_total" in body
    finally:
        proc.terminate()
        code = proc.wait(timeout=20)
    assert code == 0, proc.stderr.read()


def _hash(password: str) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


# -- container ----------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in (raw.strip() for raw in text.splitlines())
            if line and not line.startswith("#")]


def test_dockerfile_slim_base_non_root_healthcheck_and_sources():
    steps = dockerfile_instructions()
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", args["PYTHON_IMAGE"]), args
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    [health] = [a for k, a in steps if k == "HEALTHCHECK"]
    assert "/-/healthy" in health
    assert ("EXPOSE", "39431") in steps
    for kind, arg in steps:
        if kind == "COPY" and not arg.startswith("--from"):
            for source in shlex.split(arg)[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def _healthcheck_command() -> list[str]:
    [health] = [a for k, a in dockerfile_instructions() if k == "HEALTHCHECK"]
    return json.loads(health[health.index("CMD") + 3:].strip())


@pytest.mark.parametrize("setup, healthy", [
    ("plain", True), ("basic-auth", True), ("tls", True), ("closed", False)])
def test_dockerfile_healthcheck_command_against_a_live_server(pki, tmp_path, setup, healthy):
    from prometheus_client import CollectorRegistry

    server = None
    scheme = "http"
    if setup != "closed":
        text = ""
        if setup == "basic-auth":
            text = f"basic_auth_users: {{prometheus: '{_hash('x')}'}}\n"
        if setup == "tls":
            text = f"tls_server_config: {{cert_file: {pki.server_crt}, key_file: " \
                   f"{pki.server_key}}}\n"
        web = tmp_path / "web.yml"
        web.write_text(text)
        server = start_server("127.0.0.1:0", CollectorRegistry(), web_config_file=str(web))
        port = server.server_address[1]
    else:
        port = free_port()
    cmd = _healthcheck_command()
    assert cmd[0] == "python3"
    env = {**os.environ, "HEALTHCHECK_URL": f"{scheme}://127.0.0.1:{port}/-/healthy"}
    try:
        result = run([sys.executable, *cmd[1:]], env=env, timeout=30)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    assert (result.returncode == 0) == healthy, result.stdout + result.stderr


def test_dockerfile_build_stage_installs_the_package_from_what_it_copies(tmp_path):
    """The build stage's COPY lines, replayed into a folder, are enough for `pip wheel .`
    (as `pip install .` builds it: setuptools from the registry; the dependencies are not
    fetched), and the wheel has the code, its data and its dependencies' names."""
    steps = dockerfile_instructions()
    first, second = [i for i, (kind, _) in enumerate(steps) if kind == "FROM"][:2]
    for kind, arg in steps[first:second]:
        if kind != "COPY":
            continue
        *sources, dest = shlex.split(arg)
        for source in sources:
            if (ROOT / source).is_dir():  # COPY dir/ dest/: the folder's contents into dest
                shutil.copytree(ROOT / source, tmp_path / dest,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target = tmp_path / dest / Path(source).name if dest.endswith("/") \
                    else tmp_path / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target)
    result = run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                  "--wheel-dir", str(tmp_path / "wheels"), "."], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = (tmp_path / "wheels").glob("bounce_exporter-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "bounce_exporter/exposition/webconfig.py" in names
    assert "bounce_exporter/data/catalog.yaml" in names
    assert "Requires-Dist: bcrypt" in metadata
    if shutil.which("gcc"):  # the build stage installs it: the wheel has the C extension
        assert any(n.startswith("bounce_exporter_fastscan.") for n in names), sorted(names)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _default(value: str) -> str:
    """${VAR:-default} -> default, as compose interpolates without the variable set."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_compose_services_volumes_and_mounted_files():
    doc = compose()
    services = doc["services"]
    assert {"exporter", "prometheus", "alertmanager", "grafana"} <= set(services)
    declared = set(doc["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = _default(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} published beyond loopback"
    exporter = services["exporter"]
    assert exporter["build"]["dockerfile"] == "deploy/container/Dockerfile"
    assert (COMPOSE.parent / exporter["build"]["context"] / exporter["build"]["dockerfile"]
            ).is_file()
    mounts = {_default(v).split(":")[1]: _default(v).split(":")[0] for v in exporter["volumes"]}
    args = shlex.split(_default(exporter["command"]))
    log_file = args[args.index("--log.file") + 1]
    assert os.path.dirname(log_file) in mounts, "the log is not on a mounted volume"
    assert mounts[os.path.dirname(log_file)] == "postfix-log"
    assert exporter["volumes"][0].endswith(":ro")
    state = args[args.index("--state.file") + 1]
    assert mounts[os.path.dirname(state)] == "exporter-state"
    demo = services["demo-log"]
    assert demo["profiles"] == ["demo"]
    assert "postfix-log:/var/log/postfix" in demo["volumes"]
    assert log_file in demo["command"][0]


def test_compose_prometheus_config_with_its_mounts_passes_promtool(tmp_path):
    """Lay out the prometheus service's bind mounts as the container sees them, then check."""
    service = compose()["services"]["prometheus"]
    config_path = None
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            dest = tmp_path / target.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(COMPOSE.parent / source, dest)
            if target.endswith("prometheus.yml"):
                config_path = dest
    assert config_path is not None
    doc = yaml.safe_load(config_path.read_text())
    [job] = doc["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["exporter:39431"]
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"]
    result = run([tool("promtool", "prometheus"), "check", "config", str(config_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


def test_compose_grafana_provisioning_points_at_the_mounted_dashboards():
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provisioning = COMPOSE.parent / mounts["/etc/grafana/provisioning"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "bounce-exporter.yml").read_text(
        ))["providers"]
    dashboards = COMPOSE.parent / mounts[provider["options"]["path"]]
    assert (dashboards / DASHBOARD.name).is_file()
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text(
        ))["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


def test_docker_compose_config_parses_the_file():
    docker = shutil.which("docker")
    probe = run([docker, "compose", "version"]) if docker else None
    if probe is None or probe.returncode != 0:
        pytest.skip("no `docker compose` plugin here: compose.yaml checked for structure only")
    result = run([docker, "compose", "-f", str(COMPOSE), "--profile", "demo", "config", "-q"])
    assert result.returncode == 0, result.stderr


# -- Grafana dashboard --------------------------------------------------------------------------

def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_variables_datasource_instance_domain():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("instance", "domain"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["multi"] and variables[name]["includeAll"]


def test_dashboard_panels_are_importable_and_use_the_datasource_variable():
    doc = dashboard()
    assert doc["uid"] and doc["title"] and "__inputs" not in doc  # provisioning cannot fill inputs
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}"


def test_dashboard_covers_what_the_issue_asks_for():
    titles = " | ".join(p["title"].lower() for p in dashboard()["panels"])
    for words in ("deferrals per second by domain", "bounces per second by domain",
                  "by reply code", "soft vs hard", "top deferring domains",
                  "persistent deferrals", "expired messages", "lines read",
                  "lines not understood", "log source up", "since the last line"):
        assert words in titles, words
    [table] = [p for p in dashboard()["panels"] if p["title"] == "Persistent deferrals"]
    names = table["transformations"][1]["options"]["renameByName"].values()
    assert {"Since", "Attempts"} <= set(names)


# -- Kubernetes ---------------------------------------------------------------------------------

def test_kubernetes_sidecar_shares_the_log_through_an_empty_dir():
    docs = {d["kind"]: d for d in yaml.safe_load_all(SIDECAR.read_text())}
    pod = docs["Deployment"]["spec"]["template"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    exporter, mta = containers["bounce-exporter"], containers["postfix"]
    [shared] = [m for m in exporter["volumeMounts"]
                if any(n["name"] == m["name"] for n in mta["volumeMounts"])]
    assert "emptyDir" in volumes[shared["name"]]
    assert shared.get("readOnly") is True
    args = dict(a.split("=", 1) for a in exporter["args"][1:])
    assert args["--log.file"].startswith(shared["mountPath"] + "/")
    port = exporter["ports"][0]["containerPort"]
    assert args["--web.listen-address"] == f":{port}"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    for probe in ("readinessProbe", "livenessProbe"):
        assert exporter[probe]["httpGet"]["path"] == "/-/healthy"
    assert exporter["securityContext"]["runAsNonRoot"] is True
    state = args["--state.file"]
    assert any(state.startswith(m["mountPath"] + "/") for m in exporter["volumeMounts"])
    assert docs["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


# -- demo log -----------------------------------------------------------------------------------

def load_demo():
    spec = importlib.util.spec_from_file_location("recent_log", DEPLOY / "demo" / "recent-log.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_log_moves_stamps_keeping_gaps():
    demo = load_demo()
    lines = ["Dec 31 23:59:58 mx1 postfix/qmgr[1]: A: removed", "no stamp here",
             "Jan  1 00:00:03 mx1 postfix/qmgr[1]: B: removed",
             "2024-01-01T00:00:04.5+00:00 mx1 postfix/qmgr[1]: C: removed"]
    out = demo.shift(lines[:3], now=1_000_000.0, end_ago=5)
    assert out[1] == "no stamp here"
    assert out[0] == "1970-01-12T13:46:30.000000+00:00 mx1 postfix/qmgr[1]: A: removed"
    assert out[2] == "1970-01-12T13:46:35.000000+00:00 mx1 postfix/qmgr[1]: B: removed"
    out = demo.shift(lines[3:], now=1_000_000.0, end_ago=0)
    assert out == ["1970-01-12T13:46:40.000000+00:00 mx1 postfix/qmgr[1]: C: removed"]


def test_demo_config_is_valid():
    config = config_module.load_config(str(DEPLOY / "demo" / "demo.yml"), {})
    assert [r.name for r in config.deferral_rules] == ["disk-full", "unreachable"]


# -- README -------------------------------------------------------------------------------------

def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def known_config_keys() -> set[str]:
    keys = set()
    for module in (config_module, deferrals):
        for name, value in vars(module).items():
            if name.lstrip("_").endswith("_KEYS") and isinstance(value, (set, frozenset, tuple)):
                keys |= set(value)
    return keys


def test_readme_configuration_documents_every_config_key():
    section = readme_section("Configuration")
    keys = known_config_keys()
    assert {"listen_address", "config_file", "max_domains", "text_rules"} <= keys
    missing = sorted(k for k in keys if not re.search(rf"\b{re.escape(k)}\b", section))
    assert not missing, f"config keys not in README's Configuration section: {missing}"


def test_readme_documents_every_web_config_key():
    section = readme_section("TLS and basic auth")
    keys = webconfig.TOP_KEYS | webconfig.TLS_KEYS | set(webconfig.CLIENT_AUTH_TYPES)
    missing = sorted(k for k in keys if k not in section)
    assert not missing, missing


def test_readme_documents_every_flag_of_serve():
    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]
    flags = {o for action in serve._actions for o in action.option_strings
             if o.startswith("--") and o != "--help"}
    assert "--web.config.file" in flags
    text = README.read_text()
    missing = sorted(f for f in flags if f"`{f}" not in text)
    assert not missing, f"flags of serve not in README: {missing}"


def test_readme_quick_start_keeps_its_first_two_commands():
    """Command 1 in a venv (Debian 12's python3 refuses a system-wide pip install, PEP 668), with
    Debian's python3-venv first, on the mail log or else the sample log shipped here; command 2 is
    the one .ci/run runs, word for word."""
    text = README.read_text()
    first = text.index("```sh\n")
    block = text[first:text.index("```\n", first + 5)]
    commands = [line for line in block.splitlines() if line and not line.startswith(("#", "`"))]
    assert commands == [
        ("apt-get install -y python3-venv; python3 -m venv .venv && .venv/bin/pip install . && "
         ".venv/bin/bounce-exporter serve --log.from-start --log.file \"$(ls /var/log/mail.log "
         "/var/log/maillog 2>/dev/null | head -n1 | grep . || echo config/sample/postfix.log)\""),
        "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/python -m pytest",
    ]
    assert (ROOT / "config" / "sample" / "postfix.log").is_file()
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_unit_runs_the_command_where_the_documented_install_puts_it():
    """README "Deployment" and the unit's own comment install into /opt/bounce-exporter; the
    unit runs that venv's command, and reads the one default configuration file."""
    binary = unit_settings()["ExecStart"][0].split()[0]
    venv = binary.removesuffix("/bin/bounce-exporter")
    assert binary == "/opt/bounce-exporter/bin/bounce-exporter"
    install = f"python3 -m venv {venv} && {venv}/bin/pip install ."
    assert install in readme_section("Deployment")
    assert install in UNIT.read_text()
    assert f"`{binary} serve`" in readme_section("Deployment")
    assert unit_settings()["ConfigurationDirectory"] == ["bounce-exporter"]


def test_one_default_config_path_everywhere():
    default = config_module.DEFAULT_CONFIG_FILE
    assert default == "/etc/bounce-exporter/config.yml"
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in ("serve", "parse", "explain"):
        [action] = [a for a in commands[name]._actions if "--config.file" in a.option_strings]
        assert action.help.startswith(f"YAML configuration file (default: {default} if it "
                                      "exists)"), name
    assert default in readme_section("Configuration") and default in readme_section("Deployment")
    assert f"install -D -m 0644 config/example.yml {default}" in UNIT.read_text()
    paths = set(re.findall(r"/etc/bounce-exporter/\S+\.yml", README.read_text() + UNIT.read_text()))
    assert paths == {default, "/etc/bounce-exporter/web-config.yml"}, paths


def test_readme_deployment_names_every_shipped_file():
    text = README.read_text()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            # Named in full, or as a path relative to a folder that is named ("deploy/x/": "y/z")
            relative = path.relative_to(ROOT)
            assert any(f"{parent.as_posix()}/" in text and
                       relative.relative_to(parent).as_posix() in text
                       for parent in relative.parents if parent != Path(".")) \
                or relative.as_posix() in text, relative

