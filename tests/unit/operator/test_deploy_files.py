"""deploy/: the files people copy stay valid and in step with the code.

Every variable they set is one the gateway (or the tool named beside it) reads; the stop
timeouts cover the drain; the proxies' idle timeouts cover the heartbeat; HAProxy and
nginx accept their configurations (`haproxy -c`, `nginx -t`, skipped where the tool is
not installed); the Compose file parses and, where a Compose implementation is installed,
`docker compose config` accepts it; systemd accepts the units; the Grafana dashboard
queries only metrics that exist. Images are not built here (no Docker engine).
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.metrics import MetricWrapperBase

from image_router.cli.serving import RELEASE_GRACE_S
from image_router.config import Settings
from image_router.config.generation import GenerationSettings
from image_router.config.group import env_names
from image_router.config.serving import ServingSettings
from image_router.config.source import VENDORS, setting_groups
from image_router.observability import metrics
from image_router.providers import PROVIDERS

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
ENV_FILES = [
    DEPLOY / "env" / "image-router.env",
    DEPLOY / "env" / "secrets.env",
    DEPLOY / "compose" / "gateway.env",
    DEPLOY / "compose" / "secrets.env.example",
]
UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + sorted(
    (DEPLOY / "systemd").glob("*.timer")
)
GATEWAYS = ("gateway-1", "gateway-2")

# Read by something other than the gateway's settings, each named with its reader.
OTHER_READERS = {
    metrics.MULTIPROC_ENV: "prometheus_client (observability/metrics.py)",
    "FORWARDED_ALLOW_IPS": "uvicorn's proxy headers",
    "PATH": "the shell",
    "PYTHONUNBUFFERED": "Python",
    "PYTHONDONTWRITEBYTECODE": "Python",
    "PIP_NO_CACHE_DIR": "pip, in the image's build stage",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip, in the image's build stage",
}
# `NAME=value` and the commented-out `# NAME=value` suggestions alike.
ASSIGNMENT = re.compile(r"^(?:#\s?)?([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def gateway_variables() -> set[str]:
    """Every environment variable the gateway reads: its settings and the vendors'."""
    names: set[str] = set()
    for group, model in setting_groups(Settings).items():
        if group != VENDORS:
            for name, info in model.model_fields.items():
                names.update(env_names(name, info))
    for vendor in PROVIDERS.values():
        names.update(n for n in (vendor.key_env, *vendor.base_url_env) if n)
        names.update(vendor.extra_env.values())
    return names


def backup_script_variables() -> set[str]:
    """The variables deploy/backup's scripts read (`${NAME:-default}`)."""
    text = (DEPLOY / "backup" / "common.sh").read_text()
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):-", text))


def assignments(path: Path) -> set[str]:
    return set(ASSIGNMENT.findall(path.read_text()))


def env_values(*paths: Path) -> dict[str, str]:
    """NAME → value of the active lines (a later file wins, as systemd reads them)."""
    values: dict[str, str] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                name, value = line.split("=", 1)
                values[name] = value
    return values


def unit_environment(path: Path) -> set[str]:
    return set(re.findall(r"^Environment=([A-Z][A-Z0-9_]*)=", path.read_text(), re.MULTILINE))


def dockerfile_env() -> set[str]:
    text = (DEPLOY / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("ENV "):
            names.update(re.findall(r"([A-Z][A-Z0-9_]*)=", line))
    return names


def compose() -> dict:  # type: ignore[type-arg]
    loaded = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def seconds(text: str) -> float:
    """`50`, `50s`, `90s`, `21m` as seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", text.strip())
    assert match, text
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return int(match.group(1)) * scale


# ------------------------------------------------------------------- variables


def test_every_variable_the_deploy_files_set_is_read() -> None:
    known = gateway_variables() | set(OTHER_READERS) | backup_script_variables()
    set_by = {path.relative_to(ROOT): assignments(path) for path in ENV_FILES}
    set_by |= {path.relative_to(ROOT): unit_environment(path) for path in UNITS}
    set_by[Path("deploy/docker/Dockerfile")] = dockerfile_env()
    for name, service in compose()["services"].items():
        if name in (*GATEWAYS, "migrate"):
            environment = service.get("environment") or {}
            set_by[Path(f"compose.yaml {name}")] = set(environment)
    unknown = {str(where): sorted(names - known) for where, names in set_by.items()}
    assert {where: names for where, names in unknown.items() if names} == {}
    # The check has something to check.
    assert "DATABASE_URL" in set_by[Path("deploy/env/image-router.env")]


def test_the_check_catches_a_misspelt_variable(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.env"
    wrong.write_text("DATABASE_URL=x\n# REDIS_URI=redis://\n")
    assert assignments(wrong) - gateway_variables() == {"REDIS_URI"}


def test_a_fleet_host_gets_every_variable_a_fleet_needs() -> None:
    host = env_values(DEPLOY / "env" / "image-router.env", DEPLOY / "env" / "secrets.env")
    needed = {
        "PUBLIC_URL",
        "DATABASE_URL",
        "DATA_KEYS_URL",
        "STORAGE_URL",
        "S3_ENDPOINT",
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
        "REDIS_URL",
        "PII_KEK",
        "BLIND_INDEX_KEY",
        "JWT_SECRET",
        "TRUSTED_PROXY_COUNT",
        "FORWARDED_ALLOW_IPS",
        "SHUTDOWN_DRAIN_S",
    }
    assert needed - set(host) == set()
    assert host["DATABASE_URL"].split("@")[1] != host["DATA_KEYS_URL"].split("@")[1]
    assert host["AUTO_MIGRATE"] == "false"  # the units migrate in ExecStartPre
    compose_env = env_values(
        DEPLOY / "compose" / "gateway.env", DEPLOY / "compose" / "secrets.env.example"
    )
    assert needed - {"FORWARDED_ALLOW_IPS"} - set(compose_env) == set()
    # One proxy in front of the gateways, in both.
    assert host["TRUSTED_PROXY_COUNT"] == compose_env["TRUSTED_PROXY_COUNT"] == "1"


# ------------------------------------------------------------ timeouts agree


def test_stop_timeouts_cover_the_drain() -> None:
    drain = float(env_values(DEPLOY / "env" / "image-router.env")["SHUTDOWN_DRAIN_S"])
    assert drain == ServingSettings().shutdown_drain_s  # the default, not this shell's
    for unit in ("image-router.service", "image-router@.service"):
        text = (DEPLOY / "systemd" / unit).read_text()
        (stop,) = re.findall(r"^TimeoutStopSec=(\S+)$", text, re.MULTILINE)
        assert seconds(stop) > drain + RELEASE_GRACE_S, unit
        assert "KillMode=mixed" in text and "--workers auto" in text
        assert re.search(r"^ExecStartPre=\S+ db upgrade$", text, re.MULTILINE), unit
    compose_drain = float(env_values(DEPLOY / "compose" / "gateway.env")["SHUTDOWN_DRAIN_S"])
    for name in GATEWAYS:
        grace = compose()["services"][name].get("stop_grace_period") or compose()["x-gateway"].get(
            "stop_grace_period"
        )
        assert seconds(grace) > compose_drain + RELEASE_GRACE_S, name
    assert "STOPSIGNAL SIGTERM" in (DEPLOY / "docker" / "Dockerfile").read_text()


def test_proxy_idle_timeouts_outlast_the_silence_before_the_heartbeat() -> None:
    generation = GenerationSettings()  # the defaults
    longest_silence = max(generation.heartbeat_after_s, generation.heartbeat_interval_s)
    for cfg in (DEPLOY / "haproxy" / "haproxy.cfg", DEPLOY / "compose" / "haproxy.cfg"):
        text = cfg.read_text()
        for side in ("client", "server"):
            (value,) = re.findall(rf"^\s*timeout {side} (\S+)$", text, re.MULTILINE)
            assert seconds(value) >= 3 * longest_silence, (cfg, side)
        # A reload lets the old process finish the longest generation.
        (hard_stop,) = re.findall(r"^\s*hard-stop-after (\S+)$", text, re.MULTILINE)
        assert seconds(hard_stop) > generation.video_deadline_s
        assert "option forwardfor" in text and "http-request del-header X-Forwarded-For" in text
        assert "uri /ready" in text and "http-check expect status 200" in text
        # It would cut paid generations off when a draining gateway is marked down.
        assert not re.search(r"^[^#]*on-marked-down shutdown-sessions", text, re.MULTILINE)
    nginx = (DEPLOY / "nginx" / "image-router.conf").read_text()
    for directive in ("proxy_read_timeout", "proxy_send_timeout", "send_timeout"):
        (value,) = re.findall(rf"^\s*{directive} (\S+);$", nginx, re.MULTILINE)
        assert seconds(value) >= 3 * longest_silence, directive
    assert re.search(r"^\s*proxy_buffering off;$", nginx, re.MULTILINE)
    assert re.search(r"^\s*gzip off;$", nginx, re.MULTILINE)
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in nginx


# ------------------------------------------------------------ the tools agree


@pytest.fixture
def certificate_dir(tmp_path: Path) -> Path:
    """A throwaway self-signed certificate and key, as HAProxy and nginx want them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "site.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "site.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "haproxy-certs").mkdir()
    (tmp_path / "haproxy-certs" / "site.pem").write_bytes(
        (directory / "site.crt").read_bytes() + (directory / "site.key").read_bytes()
    )
    return tmp_path


def _haproxy_check(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_both_configurations(certificate_dir: Path) -> None:
    production = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert "crt /etc/haproxy/certs/" in production
    cfg = certificate_dir / "haproxy.cfg"
    cfg.write_text(
        production.replace("crt /etc/haproxy/certs/", f"crt {certificate_dir}/haproxy-certs/")
    )
    done = _haproxy_check(cfg)
    assert done.returncode == 0 and "Configuration file is valid" in done.stdout, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    # Compose's: only the gateways' names are unknown outside Docker's network.
    done = _haproxy_check(DEPLOY / "compose" / "haproxy.cfg")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert all("could not resolve address 'gateway-" in line for line in warnings), warnings
    # The check can fail.
    cfg.write_text(production.replace("option forwardfor", "option forwardedfor"))
    assert _haproxy_check(cfg).returncode != 0


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_configuration(certificate_dir: Path) -> None:
    site = (DEPLOY / "nginx" / "image-router.conf").read_text()
    live = "/etc/letsencrypt/live/images.example.com"
    assert f"{live}/fullchain.pem" in site
    site = site.replace(f"{live}/fullchain.pem", str(certificate_dir / "certs" / "site.crt"))
    site = site.replace(f"{live}/privkey.pem", str(certificate_dir / "certs" / "site.key"))
    (certificate_dir / "site.conf").write_text(site)
    main = certificate_dir / "nginx.conf"
    main.write_text(
        f"pid {certificate_dir}/nginx.pid;\nerror_log {certificate_dir}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; include {certificate_dir}/site.conf; }}\n"
    )
    done = subprocess.run(
        ["nginx", "-t", "-c", str(main), "-p", str(certificate_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


def test_the_compose_file_describes_the_fleet() -> None:
    spec = compose()
    services = spec["services"]
    assert set(services) == {
        "postgres",
        "keystore",
        "redis",
        "minio",
        "minio-init",
        "migrate",
        *GATEWAYS,
        "haproxy",
    }
    template = spec["x-gateway"]
    assert template["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert "/ready" in " ".join(template["healthcheck"]["test"])
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["gateway-1"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }
    assert "mc mb" in services["minio-init"]["command"][0]
    # The key store is a server of its own, not a database beside the main one.
    secrets = env_values(DEPLOY / "compose" / "secrets.env.example")
    assert "@postgres:" in secrets["DATABASE_URL"] and "@keystore:" in secrets["DATA_KEYS_URL"]
    # The gateways publish no port: only HAProxy reaches them.
    assert all("ports" not in services[name] for name in (*GATEWAYS, "migrate"))
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in services["haproxy"]["volumes"]


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        done = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if done.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.skipif(_compose_command() is None, reason="no Compose implementation installed")
def test_compose_accepts_the_file(tmp_path: Path) -> None:
    command = _compose_command()
    assert command is not None
    # A copy, with the two files an operator creates from their examples.
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY / "compose", copy / "compose")
    shutil.copytree(DEPLOY / "docker", copy / "docker")
    shutil.copy(copy / "compose" / "env.example", copy / "compose" / ".env")
    shutil.copy(copy / "compose" / "secrets.env.example", copy / "compose" / "secrets.env")
    done = subprocess.run(
        [*command, "-f", "compose.yaml", "config"],
        cwd=copy / "compose",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    assert resolved["gateway-2"]["stop_grace_period"] in ("50s", 50, "50")
    # Without the passwords' file the file refuses to start, naming what is missing.
    (copy / "compose" / ".env").unlink()
    done = subprocess.run(
        [*command, "-f", "compose.yaml", "config"],
        cwd=copy / "compose",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr


def test_the_image_runs_unprivileged_and_checks_ready() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.MULTILINE)
    assert "pip install -c constraints.txt ." in text
    assert re.search(r"^USER image-router", text, re.MULTILINE)
    assert "/ready" in text.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]
    assert 'ENTRYPOINT ["image-router"]' in text
    assert 'CMD ["serve", "--workers", "auto"]' in text
    ignored = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignored[1:5] == ["*", "!pyproject.toml", "!constraints.txt", "!README.md"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    # The paths of an installed host, pointed at this checkout's programs.
    binary = Path(shutil.which("image-router") or ROOT / ".venv" / "bin" / "image-router")
    names = []
    for unit in UNITS:
        text = unit.read_text().replace("/opt/image-router/bin/image-router", str(binary))
        text = text.replace("/opt/image-router/deploy/backup", str(DEPLOY / "backup"))
        text = text.replace("/opt/image-router/bin/python", str(binary.parent / "python"))
        (tmp_path / unit.name).write_text(text)
        names.append(unit.name.replace("@.service", "@8001.service"))
    (tmp_path / "image-router@8001.service").write_text(
        (tmp_path / "image-router@.service").read_text()
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # systemd-analyze exits 0 on unknown keys and unparsable values: it only says so.
    complaints = [line for line in done.stderr.splitlines() if "image-router" in line]
    assert done.returncode == 0 and complaints == [], done.stderr


# -------------------------------------------------------------------- Grafana


def our_series() -> set[str]:
    """Every series name metrics.py exposes (a counter's `_total`, a histogram's parts)."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                if family.type == "counter":
                    names.add(f"{family.name}_total")
                elif family.type == "histogram":
                    names.update(f"{family.name}_{part}" for part in ("bucket", "count", "sum"))
                else:
                    names.add(family.name)
    return names


def our_labels() -> set[str]:
    labels = {"instance", "job", "le"}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            labels.update(value._labelnames)
    return labels


def dashboard_queries() -> Iterator[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "image-router.json").read_text())

    def walk(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(dashboard)


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    queries = list(dashboard_queries())
    series, labels = our_series(), our_labels()
    used = {name for q in queries for name in re.findall(r"\bimage_router_[a-z_]+", q)}
    assert used - series == set()
    # Every label it selects or groups by is one of ours (or Prometheus's own).
    for query in queries:
        for selector in re.findall(r"\{([^}]*)\}", query):
            assert set(re.findall(r"(\w+)\s*=~?", selector)) <= labels, query
        for grouping in re.findall(r"\bby \(([^)]*)\)", query):
            assert {g.strip() for g in grouping.split(",")} <= labels, query
    # What the issue asks to see.
    for wanted in (
        "image_router_http_requests_total",
        "image_router_http_request_duration_seconds_bucket",
        "image_router_holds_outstanding",
        "image_router_circuit_state",
        "image_router_upstream_errors_total",
    ):
        assert wanted in used, wanted


def test_the_dashboard_check_can_fail() -> None:
    assert "image_router_http_requests" not in our_series()  # the counter is `_total`
    assert "image_router_http_request_duration_seconds_bucket" in our_series()
