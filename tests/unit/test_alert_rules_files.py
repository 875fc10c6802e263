"""One alert-rules file: the top-level alerts.toml, mounted by compose, copied verbatim for Kubernetes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from stream.alerts.cli import alerts_group

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts.toml"
K8S_COPY = ROOT / "deploy/k8s/config/alerts.toml"
MOUNT = "/etc/yuqing/alerts.toml"


def test_the_kubernetes_copy_is_the_rules_file_verbatim() -> None:
    # kustomize reads files only below deploy/k8s, so the ConfigMap needs its own copy.
    assert K8S_COPY.read_bytes() == RULES.read_bytes(), "run: cp alerts.toml deploy/k8s/config/alerts.toml"
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/kustomization.yaml").read_text(encoding="utf-8"))
    files = [f for gen in kustomization["configMapGenerator"] for f in gen.get("files", [])]
    assert "config/alerts.toml" in files


def test_compose_mounts_the_rules_file_itself() -> None:
    compose_dir = ROOT / "deploy/compose"
    service = yaml.safe_load((compose_dir / "compose.yaml").read_text(encoding="utf-8"))["services"]["alerts"]
    [volume] = [v for v in service["volumes"] if v.endswith(f":{MOUNT}:ro")]
    match = re.fullmatch(r"\$\{ALERTS_FILE:-(?P<default>[^}]+)\}:.*", volume)
    assert match, volume
    assert (compose_dir / match["default"]).resolve() == RULES
    env_example = (compose_dir / ".env.example").read_text(encoding="utf-8")
    [value] = re.findall(r"^ALERTS_FILE=(.*)$", env_example, re.MULTILINE)
    assert (compose_dir / value).resolve() == RULES


def test_no_other_rules_file_is_kept() -> None:
    tomls = [*ROOT.glob("*.toml"), *(ROOT / "deploy").rglob("*.toml")]
    rules_files = sorted(p.relative_to(ROOT) for p in tomls if re.search(r"^\[\[rule\]\]", p.read_text("utf-8"), re.M))
    assert rules_files == [Path("alerts.toml"), Path("deploy/k8s/config/alerts.toml")]


def test_the_cli_default_is_the_rules_file() -> None:
    defaults = {
        name: param.default
        for name, command in alerts_group.commands.items()
        for param in command.params
        if param.name == "rules_path"
    }
    assert defaults, "no alerts command takes --rules"
    assert {(ROOT / Path(str(d))).resolve() for d in defaults.values()} == {RULES}
