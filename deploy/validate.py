"""Offline checks of the deploy files, each with the real tool wherever one runs without a server.

    python deploy/validate.py [compose] [k8s] [docker] [ddl] [--ddl-file FILE|-]

* compose: ``docker compose config`` (the compose plugin, else the standalone ``docker-compose``
  binary from the dev extra; neither needs an engine), then the rendered model: pinned images,
  health checks, restart policies, named volumes, the GPU reservation, secrets only from .env,
  Grafana's data source logging in as a readonly = 1 user of ClickHouse's users.d (not the writer),
  every yuqing command parsed by the real CLI and every environment loaded into the real Settings.
* k8s: every manifest, with the generated ConfigMap and Secret, against the Kubernetes JSON
  schemas (kubernetes-validate, strict); ``kubectl kustomize`` output too where kubectl exists;
  then the GPU limit, probes, metrics port, grace period, references, CLI args and config files,
  and the readonly = 1 Grafana user (ConfigMap yuqing-clickhouse-users, its password in the Secret).
* docker: Dockerfiles parsed by BuildKit's own parser (the ``dockerfile`` package): multi-stage,
  pinned bases, non-root user, /models volume, COPY sources present, CUDA matching onnxruntime.
* ddl: ``yuqing db init --cluster`` statements parsed by ClickHouse (chdb) and dry-run on a server
  configured with the macros and the cluster: Replicated tables must fail only for want of
  Keeper, everything else must be created; two deliveries of one item (another published_at and
  label) must collapse to one row of ``scored_local``, and every table's columns must equal the
  single-node schema's.

Exit status 1 when any check finds a problem.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `stream` importable from the tree
    sys.path.insert(0, str(ROOT))

COMPOSE_FILE = ROOT / "deploy/compose/compose.yaml"
COMPOSE_ENV_EXAMPLE = ROOT / "deploy/compose/.env.example"
K8S_DIR = ROOT / "deploy/k8s"
DOCKERFILES = (ROOT / "deploy/docker/Dockerfile.gpu", ROOT / "deploy/docker/Dockerfile.cpu")
# Oldest Kubernetes minor these manifests target, and the newest the schemas know.
K8S_VERSIONS = ("1.30.0", "latest")
# The DLQ flush of one batch may wait this long (stream/clickhouse_sink.py); a stop must outlast it.
DLQ_FLUSH_TIMEOUT_S = 30
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "WEBHOOK_URL")
# Values given to required secrets while rendering, never used anywhere.
PLACEHOLDER_SECRET = "validation-only"
CLUSTER_CHECK_NAME = "yuqing_check"
NO_ZOOKEEPER = 225
ALL_CHECKS = ("compose", "k8s", "docker", "ddl")


@dataclass
class Result:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def note(self, text: str) -> None:
        self.notes.append(text)


# ---------------------------------------------------------------------------------------------
# shared: the real CLI and the real settings


@contextlib.contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    """Run with exactly these YUQING_* variables (others from the caller's environment removed)."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("YUQING_")]:
            del os.environ[key]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check_settings(env: Mapping[str, str], config: Path | None, where: str, result: Result) -> None:
    """The settings a container would load from its environment (and TOML file) must validate."""
    from stream.core.errors import YuqingError
    from stream.core.settings import load_settings

    try:
        with _environ({k: v for k, v in env.items() if k.startswith("YUQING_") and k != "YUQING_CONFIG"}):
            load_settings(config)
    except YuqingError as exc:
        result.problem(f"{where}: settings do not load: {exc}")


def check_cli_args(args: Sequence[str], path_map: Mapping[str, Path], where: str, result: Result) -> None:
    """Parse a container's yuqing arguments with the real click commands (nothing is run).

    Container paths are mapped to the files mounted there, so options that check a path see the
    file the container would see.
    """
    import click

    from stream.cli import cli

    mapped = [_map_path(arg, path_map) for arg in args]
    try:
        ctx = cli.make_context("yuqing", list(mapped))
        command: click.Command = cli
        while isinstance(command, click.Group):
            rest = [*(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])), *ctx.args]
            try:
                name, sub, rest = command.resolve_command(ctx, rest)
            except ModuleNotFoundError as exc:
                result.note(f"{where}: `yuqing {' '.join(args[:2])}` not checked: {exc.name} is not there yet")
                return
            if sub is None or name is None:
                result.problem(f"{where}: no command in {args!r}")
                return
            ctx = sub.make_context(name, rest, parent=ctx)
            command = sub
    except click.ClickException as exc:
        result.problem(f"{where}: `yuqing {' '.join(args)}` does not parse: {exc.format_message()}")


def _map_path(arg: str, path_map: Mapping[str, Path]) -> str:
    for inside, outside in path_map.items():
        if arg == inside or arg.startswith(inside.rstrip("/") + "/"):
            return str(outside / arg[len(inside) :].lstrip("/")) if arg != inside else str(outside)
    return arg


def check_config_files(feeds: Path | None, alerts: Path | None, where: str, result: Result) -> None:
    """feeds.toml and alerts.toml, validated by the loaders the jobs use."""
    from stream.core.errors import YuqingError

    checks: list[tuple[Path, str, str]] = []
    if feeds is not None:
        checks.append((feeds, "stream.feeds.config", "load_feeds"))
    if alerts is not None:
        checks.append((alerts, "stream.alerts.rules", "load_rules"))
    for path, module_name, loader in checks:
        try:
            module = __import__(module_name, fromlist=[loader])
        except ModuleNotFoundError:
            result.note(f"{where}: {path.name} not checked: {module_name} is not there yet")
            continue
        try:
            getattr(module, loader)(path)
        except YuqingError as exc:
            result.problem(f"{where}: {exc}")


def _pinned(image: str) -> bool:
    """name:tag with a version-like tag (not latest), or a digest."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and any(c.isdigit() for c in tag)


# ---------------------------------------------------------------------------------------------
# compose


def compose_command() -> list[str] | None:
    """`docker compose` where the plugin exists, else the standalone binary (dev extra)."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [docker, "compose"]
    for candidate in (Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")):
        if candidate and Path(candidate).exists():
            return [str(candidate)]
    return None


def render_compose(
    compose_file: Path, env_file: Path, extra_env: Mapping[str, str], fmt: str = "json"
) -> subprocess.CompletedProcess[str]:
    base = compose_command()
    if base is None:
        raise FileNotFoundError("no docker compose plugin and no docker-compose binary")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    env.update(extra_env)
    args = [*base, "-f", str(compose_file), "--env-file", str(env_file),
            "--profile", "gpu", "--profile", "cpu", "config", "--format", fmt]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


def _env_keys(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def _is_secret(key: str) -> bool:
    return any(word in key.upper() for word in SECRET_WORDS)


def check_compose(
    compose_file: Path = COMPOSE_FILE,
    env_file: Path = COMPOSE_ENV_EXAMPLE,
    *,
    require_bind_sources: bool = True,
) -> Result:
    result = Result()
    env_example = _env_keys(env_file)
    for key, value in env_example.items():
        if _is_secret(key) and value:
            result.problem(f"{env_file.name}: {key} has a value; secrets stay empty in the example")
    secrets = {k: PLACEHOLDER_SECRET for k in env_example if _is_secret(k)}

    if compose_command() is None:
        result.problem("neither `docker compose` nor `docker-compose` is installed (pip install -e '.[dev]')")
        return result
    # Without secrets the file must refuse to render: nothing falls back to a default password.
    bare = render_compose(compose_file, env_file, {})
    if bare.returncode == 0:
        result.problem("compose renders without any secret set; secrets must be required (${VAR:?...})")
    rendered = render_compose(compose_file, env_file, secrets)
    if rendered.returncode != 0:
        result.problem(f"docker compose config failed: {rendered.stderr.strip()}")
        return result
    model = json.loads(rendered.stdout)
    raw = yaml.safe_load(compose_file.read_text())
    _check_compose_model(model, raw, compose_file, result, require_bind_sources)
    return result


def _check_compose_model(
    model: dict[str, Any], raw: dict[str, Any], compose_file: Path, result: Result, require_bind_sources: bool
) -> None:
    services: dict[str, Any] = model.get("services", {})
    expected = {"kafka", "kafka-init", "clickhouse", "grafana", "db-init", "consumer", "consumer-cpu",
                "ingest", "alerts"}
    for missing in sorted(expected - services.keys()):
        result.problem(f"compose: service {missing} is missing")
    for name, svc in services.items():
        image = svc.get("image", "")
        if "build" not in svc and not _pinned(image):
            result.problem(f"compose: {name}: image {image!r} is not pinned to a version")
        restart = svc.get("restart")
        one_shot = restart == "no"
        if restart not in ("no", "unless-stopped", "always", "on-failure"):
            result.problem(f"compose: {name}: no restart policy")
        if not one_shot and "healthcheck" not in svc:
            result.problem(f"compose: {name}: long-running service without a health check")
        for volume in svc.get("volumes", []):
            # /models is the operator's folder of exported packages (MODELS_DIR), not a repo path.
            if volume.get("type") == "bind" and volume.get("target") != "/models":
                source = Path(volume["source"])
                if require_bind_sources and not source.exists():
                    result.problem(f"compose: {name}: bind-mount source {source} does not exist")
        for dep, cond in (svc.get("depends_on") or {}).items():
            dep_svc = services.get(dep, {})
            wanted = "service_completed_successfully" if dep_svc.get("restart") == "no" else "service_healthy"
            if cond.get("condition") != wanted:
                result.problem(f"compose: {name} should wait for {dep} with condition {wanted}")
    for name in ("kafka", "clickhouse", "grafana"):
        kinds = {v.get("type") for v in services.get(name, {}).get("volumes", [])}
        if "volume" not in kinds:
            result.problem(f"compose: {name} keeps its data outside a named volume")
    # Secrets: every secret-looking variable in the file is interpolated, never written in.
    for name, svc in (raw.get("services") or {}).items():
        for key, value in _raw_env(svc).items():
            if _is_secret(key) and not (isinstance(value, str) and value.startswith("${")):
                result.problem(f"compose: {name}: {key} is written into compose.yaml; take it from .env")
    for anchor in ("x-store-env", "x-kafka-env"):
        for key, value in (raw.get(anchor) or {}).items():
            if _is_secret(key) and not str(value).startswith("${"):
                result.problem(f"compose: {anchor}: {key} is written into compose.yaml; take it from .env")

    gpu = services.get("consumer", {})
    devices = (((gpu.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    if not any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices):
        result.problem("compose: consumer has no nvidia GPU reservation")
    if "--device" in gpu.get("command", []) and gpu["command"][gpu["command"].index("--device") + 1] != "cuda":
        result.problem("compose: the GPU consumer does not ask for --device cuda")
    cpu = services.get("consumer-cpu", {})
    if cpu.get("profiles") != ["cpu"] or (cpu.get("deploy") or {}).get("resources", {}).get("reservations"):
        result.problem("compose: consumer-cpu must be the `cpu` profile without a device reservation")
    if gpu.get("profiles") != ["gpu"]:
        result.problem("compose: consumer must be the `gpu` profile")
    for name in ("consumer", "consumer-cpu"):
        svc = services.get(name, {})
        grace = _seconds(svc.get("stop_grace_period", "10s"))
        if grace <= DLQ_FLUSH_TIMEOUT_S:
            result.problem(f"compose: {name}: stop_grace_period {grace}s is not longer than one batch")
        if not any(v.get("target") == "/models" and v.get("read_only") for v in svc.get("volumes", [])):
            result.problem(f"compose: {name}: model packages are not mounted read-only at /models")
    grafana = services.get("grafana", {})
    if "grafana-clickhouse-datasource" not in str(grafana.get("environment", {}).get("GF_INSTALL_PLUGINS")):
        result.problem("compose: grafana does not install grafana-clickhouse-datasource")
    _check_grafana_provisioning(grafana, result)
    _check_grafana_reader(services, result)

    # Every yuqing container: its command parses with the real CLI, its environment loads.
    for name, svc in services.items():
        if not str(svc.get("image", "")).startswith("yuqing:"):
            continue
        path_map = {v["target"]: Path(v["source"]) for v in svc.get("volumes", []) if v.get("type") == "bind"}
        check_cli_args(svc.get("command") or [], path_map, f"compose: {name}", result)
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items() if v is not None}
        check_settings(env, None, f"compose: {name}", result)
        feeds = path_map.get("/etc/yuqing/feeds.toml")
        alerts = path_map.get("/etc/yuqing/alerts.toml")
        check_config_files(
            feeds if feeds and feeds.exists() else None,
            alerts if alerts and alerts.exists() else None,
            f"compose: {name}",
            result,
        )
    kafka_env = services.get("kafka", {}).get("environment", {})
    cluster_id = str(kafka_env.get("CLUSTER_ID", ""))
    try:
        if len(base64.urlsafe_b64decode(cluster_id + "==")) != 16:
            raise ValueError
    except ValueError:
        result.problem(f"compose: kafka CLUSTER_ID {cluster_id!r} is not a base64 UUID (kafka-storage.sh random-uuid)")


def _check_grafana_provisioning(grafana: dict[str, Any], result: Result) -> None:
    """Provisioning is mounted, and what its files need from the container is there."""
    mounts = {v.get("target"): Path(v["source"]) for v in grafana.get("volumes", []) if v.get("type") == "bind"}
    source = mounts.get("/etc/grafana/provisioning")
    if source is None:
        result.problem("compose: grafana does not mount deploy/grafana/provisioning at /etc/grafana/provisioning")
        return
    env = grafana.get("environment") or {}
    for path in sorted(source.glob("*/*.y*ml")):
        text = path.read_text()
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            result.problem(f"compose: grafana: {path.name} is not valid YAML: {exc}")
            continue
        # Grafana expands $VAR and ${VAR} in provisioning files from its environment; the data
        # source takes its credentials that way (alert rules use $A for their own expressions).
        env_refs = re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\}?", text) if path.parent.name == "datasources" else []
        for var in sorted(set(env_refs)):
            if var not in env:
                result.problem(f"compose: grafana: {path.name} reads ${var}, which grafana's environment lacks")
        for provider in doc.get("providers", []) if path.parent.name == "dashboards" else []:
            folder = str((provider.get("options") or {}).get("path", ""))
            if folder and not any(folder == t or folder.startswith(str(t).rstrip("/") + "/") for t in mounts):
                result.problem(f"compose: grafana: dashboard provider path {folder} is not mounted")


def readonly_users(xml_text: str) -> dict[str, str]:
    """Users of a ClickHouse users.d file whose profile sets readonly = 1 -> the env var of their password.

    A user with a password written into the file, or with access management, is not counted.
    """
    root = ET.fromstring(xml_text)
    profiles = {p.tag for p in root.findall("profiles/*") if (p.findtext("readonly") or "").strip() == "1"}
    found = {}
    for user in root.findall("users/*"):
        password = user.find("password")
        env = password.get("from_env") if password is not None else None
        managing = (user.findtext("access_management") or "0").strip() != "0"
        if user.findtext("profile") in profiles and env and not (password is not None and password.text) \
                and not managing:
            found[user.tag] = env
    return found


def _check_grafana_reader(services: dict[str, Any], result: Result) -> None:
    """Grafana's data source logs in as a readonly = 1 user that the ClickHouse service defines."""
    grafana, clickhouse = services.get("grafana", {}), services.get("clickhouse", {})
    mounts = {v.get("target"): Path(v["source"]) for v in grafana.get("volumes", []) if v.get("type") == "bind"}
    source = mounts.get("/etc/grafana/provisioning")
    env = grafana.get("environment") or {}
    readers: dict[str, str] = {}
    for volume in clickhouse.get("volumes", []):
        target = str(volume.get("target", ""))
        path = Path(str(volume.get("source", "")))
        if volume.get("type") == "bind" and target.startswith("/etc/clickhouse-server/users.d/") and path.is_file():
            try:  # a missing source is reported with the other bind mounts
                readers.update(readonly_users(path.read_text()))
            except ET.ParseError as exc:
                result.problem(f"compose: clickhouse: {path.name} is not valid XML: {exc}")
    files = sorted(source.glob("datasources/*.y*ml")) if source else []
    if not files:
        result.problem("compose: grafana: no provisioned data source to check the ClickHouse account of")
    for path in files:
        for datasource in (yaml.safe_load(path.read_text()) or {}).get("datasources", []):
            username = str((datasource.get("jsonData") or {}).get("username", ""))
            ref = re.fullmatch(r"\$\{?([A-Z][A-Z0-9_]*)\}?", username)
            user = str(env.get(ref[1], "")) if ref else ""
            writer = str((clickhouse.get("environment") or {}).get("CLICKHOUSE_USER", ""))
            if user not in readers or user == writer:
                result.problem(f"compose: grafana: {path.name} logs in as {user or '?'!r}, not a readonly = 1 user "
                               f"of clickhouse's users.d (readonly users: {sorted(readers) or 'none'})")
            elif readers[user] not in (clickhouse.get("environment") or {}):
                result.problem(f"compose: clickhouse lacks {readers[user]}, the password of {user}")


def _raw_env(svc: dict[str, Any]) -> dict[str, Any]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: v for k, v in env.items() if k != "<<"}


def _seconds(duration: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration)):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


# ---------------------------------------------------------------------------------------------
# Kubernetes


def load_kustomization(directory: Path, result: Result) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The kustomization and the resources it yields (generated ConfigMaps and Secrets included)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if kustomization.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or kustomization.get(
        "kind"
    ) != "Kustomization":
        result.problem("k8s: kustomization.yaml has no kustomize apiVersion/kind")
    docs: list[dict[str, Any]] = []
    for rel in kustomization.get("resources", []):
        path = directory / rel
        if not path.exists():
            result.problem(f"k8s: resource {rel} does not exist")
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for gen in kustomization.get("configMapGenerator", []):
        data = {}
        for rel in gen.get("files", []):
            path = directory / rel
            if not path.exists():
                result.problem(f"k8s: configMapGenerator file {rel} does not exist")
                continue
            data[path.name] = path.read_text()
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for gen in kustomization.get("secretGenerator", []):
        string_data: dict[str, str] = {}
        for rel in gen.get("envs", []):
            path = directory / rel
            example = path.with_name(path.name + ".example")
            source = path if path.exists() else example
            if not source.exists():
                result.problem(f"k8s: secretGenerator env file {rel} (or {example.name}) does not exist")
                continue
            string_data.update({k: PLACEHOLDER_SECRET for k in _env_keys(source)})
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]},
                     "type": "Opaque", "stringData": string_data})
    return kustomization, docs


def validate_schemas(docs: Sequence[dict[str, Any]], where: str, result: Result) -> None:
    import kubernetes_validate

    versions = [kubernetes_validate.latest_version() if v == "latest" else v for v in K8S_VERSIONS]
    for doc in docs:
        ident = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except Exception as exc:  # ValidationError, SchemaNotFoundError, InvalidSchemaError
                message = getattr(exc, "message", None) or str(exc).splitlines()[0]
                path = ".".join(str(p) for p in getattr(exc, "path", []) or [])
                result.problem(f"{where}: {ident} fails the Kubernetes {version} schema at {path or '.'}: {message}")


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]] | None:
    """`kubectl kustomize` on a copy with the example secrets; None where kubectl is missing."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "k8s"
        shutil.copytree(directory, copy)
        for example in copy.glob("*.example"):
            target = example.with_suffix("")
            if not target.exists():
                target.write_text(example.read_text())
        run = subprocess.run([kubectl, "kustomize", str(copy)], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise RuntimeError(run.stderr.strip())
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def check_k8s(directory: Path = K8S_DIR) -> Result:
    result = Result()
    kustomization, docs = load_kustomization(directory, result)
    validate_schemas(docs, "k8s", result)
    try:
        built = kubectl_kustomize(directory)
    except RuntimeError as exc:
        result.problem(f"k8s: kubectl kustomize failed: {exc}")
        built = None
    if built is None:
        result.note("k8s: kubectl not found; kustomize build not checked (the schemas were)")
    else:
        validate_schemas(built, "k8s (kustomize build)", result)

    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc.get("kind", ""), {})[(doc.get("metadata") or {}).get("name", "")] = doc
    config_maps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    claims = by_kind.get("PersistentVolumeClaim", {})
    image_names = {i.get("name") for i in kustomization.get("images", [])}
    config_dir = directory / "config"

    users = config_maps.get("yuqing-clickhouse-users", {}).get("data", {})
    readers = {u: env for text in users.values() for u, env in readonly_users(text).items()}
    if not readers:
        result.problem("k8s: no ConfigMap yuqing-clickhouse-users with a readonly = 1 user for Grafana")
    for env in sorted(set(readers.values()) - set(secrets.get("yuqing-secrets", {}).get("stringData", {}))):
        result.problem(f"k8s: the Secret yuqing-secrets has no {env} (a read-only user's password)")

    workloads = {**by_kind.get("Deployment", {}), **by_kind.get("Job", {})}
    for name in ("yuqing-consumer", "yuqing-ingest", "yuqing-alerts", "yuqing-db-init"):
        if name not in workloads:
            result.problem(f"k8s: workload {name} is missing")
    for name, doc in workloads.items():
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        where = f"k8s: {doc['kind']}/{name}"
        if doc["kind"] == "Deployment":
            selector = spec.get("selector", {}).get("matchLabels", {})
            labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                result.problem(f"{where}: selector does not match the pod labels")
        if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
            result.problem(f"{where}: pods may run as root (set runAsNonRoot)")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for vol in volumes.values():
            ref = (vol.get("configMap") or {}).get("name")
            if ref and ref not in config_maps:
                result.problem(f"{where}: volume {vol['name']} names unknown ConfigMap {ref}")
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim not in claims:
                result.problem(f"{where}: volume {vol['name']} names unknown PVC {claim}")
        for container in pod.get("containers", []):
            cwhere = f"{where} container {container.get('name')}"
            if container.get("image") not in image_names:
                result.problem(f"{cwhere}: image {container.get('image')!r} is not set in kustomization images")
            env_values: dict[str, str] = {}
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret = secrets.get(ref.get("name"), {})
                    if ref.get("key") not in secret.get("stringData", {}) and not ref.get("optional"):
                        result.problem(f"{cwhere}: secret key {ref.get('name')}/{ref.get('key')} is not generated")
                    env_values[env["name"]] = PLACEHOLDER_SECRET
                elif "value" in env:
                    env_values[env["name"]] = str(env["value"])
            mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in container.get("volumeMounts", [])}
            for m in container.get("volumeMounts", []):
                if m["name"] not in volumes:
                    result.problem(f"{cwhere}: mounts unknown volume {m['name']}")
            path_map = {path: config_dir for path, vol in mounts.items() if "configMap" in vol}
            check_cli_args(container.get("args") or [], path_map, cwhere, result)
            config = env_values.get("YUQING_CONFIG")
            check_settings(env_values, Path(_map_path(config, path_map)) if config else None, cwhere, result)
    check_config_files(config_dir / "feeds.toml", config_dir / "alerts.toml", "k8s", result)

    consumer = workloads.get("yuqing-consumer")
    if consumer:
        _check_consumer(consumer, directory, config_dir, result)
    return result


def _check_consumer(doc: dict[str, Any], directory: Path, config_dir: Path, result: Result) -> None:
    from stream.core.errors import YuqingError
    from stream.core.settings import Settings, load_settings

    where = "k8s: Deployment/yuqing-consumer"
    pod = doc["spec"]["template"]["spec"]
    container = pod["containers"][0]
    if str(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")) != "1":
        result.problem(f"{where}: no `nvidia.com/gpu: 1` limit")
    raw = (directory / "consumer.yaml").read_text()
    before = raw[: raw.find("replicas:")]
    if "replicas:" not in raw or "partition" not in before.split("spec:")[-1]:
        result.problem(f"{where}: replicas has no comment on the partition limit")
    try:
        with _environ({}):
            settings = load_settings(config_dir / "yuqing.toml")
    except YuqingError:  # reported with the container's settings; judge the rest on defaults
        settings = Settings()
    batch_s = settings.batch.max_wait_ms / 1000
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= DLQ_FLUSH_TIMEOUT_S + batch_s:
        result.problem(f"{where}: terminationGracePeriodSeconds {grace} is not longer than one batch")
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
    annotations = doc["spec"]["template"].get("metadata", {}).get("annotations", {})
    args = container.get("args", [])
    port = int(args[args.index("--metrics-port") + 1]) if "--metrics-port" in args else settings.metrics.port
    if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != str(port):
        result.problem(f"{where}: Prometheus annotations do not name the metrics port {port}")
    if ports.get("metrics") != port:
        result.problem(f"{where}: container port `metrics` is not {port}")
    for probe in ("readinessProbe", "livenessProbe"):
        http = (container.get(probe) or {}).get("httpGet") or {}
        if http.get("port") not in ("metrics", port):
            result.problem(f"{where}: no {probe} on the metrics port")


# ---------------------------------------------------------------------------------------------
# Dockerfiles


def check_dockerfile(path: Path) -> Result:
    import dockerfile

    result = Result()
    where = f"docker: {path.name}"
    try:
        commands = dockerfile.parse_file(str(path))
    except dockerfile.GoParseError as exc:
        result.problem(f"{where}: BuildKit cannot parse it: {exc}")
        return result
    args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for cmd in commands:
        if cmd.cmd == "ARG" and not stages:
            key, _, default = cmd.value[0].partition("=")
            args[key] = default
        elif cmd.cmd == "FROM":
            if not cmd.value:
                continue  # reported below
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), cmd.value[0])
            alias = cmd.value[2] if len(cmd.value) >= 3 and cmd.value[1].upper() == "AS" else None
            stages.append({"image": image, "alias": alias, "commands": []})
        elif stages:
            stages[-1]["commands"].append(cmd)
    if len(stages) < 2:
        result.problem(f"{where}: not a multi-stage build")
    aliases = {s["alias"] for s in stages if s["alias"]}
    for stage in stages:
        if stage["image"] not in aliases and not _pinned(stage["image"]):
            result.problem(f"{where}: base image {stage['image']!r} is not pinned")
    if not stages:
        return result
    for cmd in commands:
        if not cmd.value and cmd.cmd not in ("HEALTHCHECK",):
            result.problem(f"{where}: line {cmd.start_line}: {cmd.cmd} without arguments")
    final = stages[-1]["commands"]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        result.problem(f"{where}: the final stage runs as root")
    volumes = " ".join(" ".join(c.value) for c in final if c.cmd == "VOLUME")
    if "/models" not in volumes:
        result.problem(f"{where}: no /models volume for the model packages")
    entry = [c for c in final if c.cmd == "ENTRYPOINT"]
    if not entry or not entry[-1].json or entry[-1].value[0] != "yuqing":
        result.problem(f"{where}: ENTRYPOINT is not [\"yuqing\"] in exec form")
    included = _dockerignore_allowlist(path.with_name(path.name + ".dockerignore"), result, where)
    for stage in stages:
        if any("torch" in " ".join(c.value) for c in stage["commands"] if c.cmd == "RUN"):
            result.problem(f"{where}: installs torch; the consumer image must not")
        for cmd in stage["commands"]:
            if cmd.cmd not in ("COPY", "ADD"):
                continue
            from_flag = [f for f in cmd.flags if f.startswith("--from=")]
            if from_flag:
                if from_flag[0].split("=", 1)[1] not in aliases:
                    result.problem(f"{where}: {cmd.original!r} copies from an unknown stage")
                continue
            for source in cmd.value[:-1]:
                if not (ROOT / source).exists():
                    result.problem(f"{where}: COPY source {source} does not exist in the build context")
                elif included is not None and source.rstrip("/").split("/")[0] not in included:
                    result.problem(f"{where}: COPY source {source} is excluded by the .dockerignore")
    if "gpu" in path.name:
        _check_cuda_base(stages[-1]["image"], where, result)
    return result


def _dockerignore_allowlist(path: Path, result: Result, where: str) -> set[str] | None:
    if not path.exists():
        result.problem(f"{where}: no {path.name}; the whole tree (.venv, caches) would be sent to the build")
        return None
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines or lines[0] != "*":
        result.problem(f"{where}: {path.name} should exclude everything first (`*`) and allow what the build needs")
        return None
    return {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}


def _check_cuda_base(image: str, where: str, result: Result) -> None:
    """The CUDA base must carry the CUDA major and cuDNN that the installed onnxruntime-gpu wants."""
    match = re.match(r"^nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-", image)
    if not match:
        result.problem(f"{where}: base {image!r} is not an nvidia/cuda X.Y.Z-cudnn-runtime image")
        return
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        result.note(f"{where}: onnxruntime is not installed; CUDA version not cross-checked")
        return
    wanted = str(getattr(info, "cuda_version", "") or "")
    if wanted and wanted.split(".")[0] != match[1]:
        result.problem(f"{where}: base has CUDA {match[1]}.{match[2]}, onnxruntime-gpu is built for CUDA {wanted}")


def check_docker(paths: Sequence[Path] = DOCKERFILES) -> Result:
    result = Result()
    for path in paths:
        sub = check_dockerfile(path)
        result.problems.extend(sub.problems)
        result.notes.extend(sub.notes)
    return result


# ---------------------------------------------------------------------------------------------
# cluster DDL

_ON_CLUSTER = re.compile(r"\s+ON CLUSTER\s+(`[^`]+`|'[^']+'|[\w.-]+)")
_REPLICATED_ARGS = re.compile(r"Replicated(\w*MergeTree)\(\s*'[^']*'\s*,\s*'[^']*'\s*(?:,\s*)?")
_ERROR_CODE = re.compile(r"Code: (\d+)")


def split_statements(text: str) -> list[str]:
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip()]


def check_cluster_ddl(statements: Sequence[str], query: Callable[[str], str] | None = None) -> Result:
    """Parse every statement with ClickHouse, then dry-run them on a node with macros and the cluster.

    ``query`` runs SQL and returns JSONCompact text; by default a fresh chdb session configured
    with ``<macros>`` and a ``<remote_servers>`` entry for the cluster the DDL names.
    """
    result = Result()
    clusters = {m[1].strip("`'") for s in statements for m in [_ON_CLUSTER.search(s)] if m}
    if len(clusters) != 1:
        result.problem(f"ddl: expected one ON CLUSTER name, found {sorted(clusters) or 'none'}")
        return result
    cluster = clusters.pop()
    with contextlib.ExitStack() as stack:
        if query is None:
            query = stack.enter_context(_chdb_node(cluster))
        _parse_all(statements, query, result)
        if not result.problems:
            _dry_run(statements, query, result)
    return result


@contextlib.contextmanager
def _chdb_node(cluster: str) -> Iterator[Callable[[str], str]]:
    from chdb import session

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.xml"
        # One shard of one replica; `localhost` is never contacted by these checks.
        config.write_text(
            "<clickhouse><macros><shard>01</shard><replica>replica-1</replica></macros>"
            f"<remote_servers><{cluster}><shard><replica><host>localhost</host><port>9000</port>"
            f"</replica></shard></{cluster}></remote_servers></clickhouse>"
        )
        sess = session.Session(f":memory:?config-file={config}")
        try:
            yield lambda sql: str(sess.query(sql, "JSONCompact"))
        finally:
            sess.close()


def _error_code(exc: BaseException) -> int | None:
    match = _ERROR_CODE.search(str(exc))
    return int(match[1]) if match else None


def _rows(query: Callable[[str], str], sql: str) -> list[list[Any]]:
    text = query(sql)
    return json.loads(text)["data"] if text.strip() else []


def _parse_all(statements: Sequence[str], query: Callable[[str], str], result: Result) -> None:
    for statement in statements:
        head = statement.splitlines()[0][:90]
        literal = statement.replace("\\", "\\\\").replace("'", "\\'")
        try:
            formatted = _rows(query, f"SELECT formatQuery('{literal}')")[0][0]
        except Exception as exc:  # the engine's syntax error, with its position
            result.problem(f"ddl: ClickHouse cannot parse {head!r}: {str(exc).strip().splitlines()[0]}")
            continue
        if statement.startswith("CREATE") and " ON CLUSTER " not in formatted:
            result.problem(f"ddl: {head!r} is not ON CLUSTER")


def _dry_run(statements: Sequence[str], query: Callable[[str], str], result: Result) -> None:
    from stream.core.schema import migrations

    database = ""
    for statement in statements:
        local = _ON_CLUSTER.sub("", statement, count=1)
        head = statement.splitlines()[0][:90]
        if match := re.match(r"CREATE DATABASE IF NOT EXISTS (\w+)", local):
            database = match[1]
        if _REPLICATED_ARGS.search(local):
            try:
                query(local)
            except Exception as exc:
                if _error_code(exc) != NO_ZOOKEEPER:
                    result.problem(f"ddl: {head!r} is refused: {str(exc).strip().splitlines()[0]}")
                    continue
            else:
                result.problem(f"ddl: {head!r} was created without Keeper; is it replicated?")
                continue
            # Valid but for Keeper: create the same table unreplicated so later statements can run.
            local = _REPLICATED_ARGS.sub(lambda m: f"{m[1]}(", local, count=1)
        try:
            query(local)
        except Exception as exc:
            result.problem(f"ddl: {head!r} is refused: {str(exc).strip().splitlines()[0]}")
    if result.problems or not database:
        return
    tables = {r[0]: (r[1], r[2]) for r in _rows(
        query, f"SELECT name, engine, engine_full FROM system.tables WHERE database = '{database}'")}
    for name, (engine, full) in tables.items():
        if engine == "Distributed":
            target = re.match(r"Distributed\('[^']*', '(\w+)', '(\w+)'", full)
            if not target or target[1] != database or target[2] not in tables:
                result.problem(f"ddl: Distributed table {name} does not point at a local table ({full})")
    _compare_with_single_node(database, tables, migrations, query, result)
    if "scored_local" in tables:
        _check_deliveries_collapse(database, query, result)


def _columns(query: Callable[[str], str], database: str, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in _rows(
        query, f"SELECT name, type FROM system.columns WHERE database = '{database}' AND table = '{table}' "
        "ORDER BY position")]


def _compare_with_single_node(
    database: str, tables: dict[str, tuple[str, str]], migrations: Callable[..., Any],
    query: Callable[[str], str], result: Result,
) -> None:
    """Create the single-node schema beside it; every table must have the same columns, in order."""
    reference = f"{database}_single_node"
    for migration in migrations(reference):
        for statement in migration.statements:
            if isinstance(statement, str):  # not a Copy: a fresh store has no rows to move
                query(statement)
    single = [r[0] for r in _rows(
        query, f"SELECT name FROM system.tables WHERE database = '{reference}' AND engine NOT LIKE '%View'")]
    for table in single:
        expected = _columns(query, reference, table)
        for candidate in (table, f"{table}_local"):
            if candidate not in tables and candidate == table:
                result.problem(f"ddl: the cluster schema has no table {table}")
            if candidate in tables and _columns(query, database, candidate) != expected:
                result.problem(f"ddl: {candidate} does not have the columns of the single-node {table}")


def _check_deliveries_collapse(database: str, query: Callable[[str], str], result: Result) -> None:
    """Two deliveries of one (id, model_version) with another published_at and label: one row under FINAL."""
    # Stamped now, so that no TTL the schema was given has expired them.
    query(
        f"INSERT INTO {database}.scored_local (id, published_at, task, model_version, label, scored_at) "
        "SELECT 'a', now64(3) - toIntervalHour(number * 2), 'sentiment', 'v1', "
        "['negative', 'positive'][number + 1], now64(3) + toIntervalSecond(number) FROM numbers(2)"
    )
    rows = _rows(query, f"SELECT count(), any(label) FROM {database}.scored_local FINAL")
    if not rows or int(rows[0][0]) != 1 or rows[0][1] != "positive":
        result.problem(f"ddl: two deliveries of one item stay apart in scored_local (FINAL gives {rows})")


# ---------------------------------------------------------------------------------------------


def _print(name: str, result: Result) -> None:
    for note in result.notes:
        print(f"  note: {note}")
    for problem in result.problems:
        print(f"  FAIL: {problem}")
    print(f"{name}: {'ok' if not result.problems else f'{len(result.problems)} problem(s)'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("checks", nargs="*", metavar="CHECK", help=f"any of {', '.join(ALL_CHECKS)} (default: all)")
    parser.add_argument("--ddl-file", help="statements to check instead of `yuqing db init --cluster` ('-': stdin)")
    opts = parser.parse_args(argv)
    unknown = sorted(set(opts.checks) - set(ALL_CHECKS))
    if unknown:
        parser.error(f"unknown check(s): {', '.join(unknown)}")
    checks = opts.checks or list(ALL_CHECKS)
    failed = False
    for name in checks:
        if name == "compose":
            result = check_compose()
        elif name == "k8s":
            result = check_k8s()
        elif name == "docker":
            result = check_docker()
        else:
            if opts.ddl_file:
                text = sys.stdin.read() if opts.ddl_file == "-" else Path(opts.ddl_file).read_text()
                statements = split_statements(text)
            else:
                from stream.core.cluster_schema import cluster_ddl

                statements = cluster_ddl("yuqing", CLUSTER_CHECK_NAME, ttl_days=30)
            result = check_cluster_ddl(statements)
        _print(name, result)
        failed = failed or bool(result.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
