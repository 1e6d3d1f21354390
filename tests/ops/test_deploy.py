"""deploy/: Prometheus config and alert rules (promtool, with unit tests for every alert),
Kubernetes manifests (kubernetes-validate, the API's own JSON schemas), the compose file
(the compose specification's JSON schema), the Grafana dashboard and the configs they ship.
The live side (a real Prometheus scraping a running daemon) is tests/ops/test_prometheus_e2e.py."""

import copy
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from streamlearn.config import load_config
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert Path(PROMTOOL).exists(), "promtool missing: scripts/test.sh installs Debian's prometheus"
    return subprocess.run(
        [PROMTOOL, *args],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_prometheus_config_and_rules_pass_promtool():
    for args in (
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "rules.yml"),
        ("test", "rules", "rules_test.yml"),
    ):
        res = _promtool(*args)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
    assert "SUCCESS: 12 rules found" in _promtool("check", "rules", "rules.yml").stdout


def test_every_alert_has_a_runbook_line_and_a_unit_test():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((DEPLOY / "prometheus" / "rules_test.yml").read_text())
    tested = {
        c["alertname"] for t in tests["tests"] for c in t["alert_rule_test"] if c["exp_alerts"]
    }
    quiet = {
        c["alertname"] for t in tests["tests"] for c in t["alert_rule_test"] if not c["exp_alerts"]
    }
    assert set(alerts) == tested == quiet  # each fires once and is shown quiet once
    for name, rule in alerts.items():
        runbook = rule["annotations"]["runbook"]
        assert "\n" not in runbook
        assert len(runbook) > 40, name
        assert rule["labels"]["severity"] in ("page", "warn")


def _kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kubernetes-validate"
    return subprocess.run(
        [str(exe), "--strict", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_kubernetes_manifests_validate_against_the_api_schemas(tmp_path):
    manifests = sorted((DEPLOY / "k8s").glob("*.yaml"))
    res = _kubernetes_validate(*manifests)
    assert res.returncode == 0, res.stdout + res.stderr
    kinds = {doc["kind"] for p in manifests for doc in yaml.safe_load_all(p.read_text()) if doc}
    assert {
        "StatefulSet",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "CronJob",
    } <= kinds
    # The validator does reject what is wrong (strict: unknown fields too).
    adapter = yaml.safe_load((DEPLOY / "k8s" / "adapter.yaml").read_text())
    broken = copy.deepcopy(adapter)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(broken))
    assert _kubernetes_validate(bad).returncode != 0


def test_the_adapter_is_probed_limited_non_root_and_scraped():
    adapter = yaml.safe_load((DEPLOY / "k8s" / "adapter.yaml").read_text())
    pod = adapter["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"]
    assert c["resources"]["limits"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    job = yaml.safe_load_all((DEPLOY / "k8s" / "meta-trainer.yaml").read_text())
    cron = next(d for d in job if d["kind"] == "CronJob")
    trainer = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert trainer["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert trainer["nodeSelector"]


def test_shipped_configs_are_valid_streamlearn_configs(tmp_path):
    load_config(DEPLOY / "config" / "compose.yaml", env={})
    cm = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())
    tree = yaml.safe_load(cm["data"]["config.yaml"])
    secret = tmp_path / "password"
    secret.write_text("s3cret")
    tree["kafka"]["security"]["sasl_password_file"] = str(secret)
    tree["kafka"]["security"]["ssl_cafile"] = str(secret)
    path = tmp_path / "k8s.yaml"
    path.write_text(yaml.safe_dump(tree))
    cfg = load_config(path, env={})
    assert cfg.kafka.security.protocol == "SASL_SSL"


@pytest.fixture(scope="session")
def compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema, as docker-compose 1.29.2 ships it (PyPI;
    the wheel is cached under ~/.cache/streamlearn/wheels)."""
    cache = Path.home() / ".cache" / "streamlearn" / "wheels"
    wheel = cache / "docker_compose-1.29.2-py2.py3-none-any.whl"
    if not wheel.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "-d",
                str(cache),
                "docker-compose==1.29.2",
            ],
            check=True,
            timeout=300,
        )
    with zipfile.ZipFile(wheel) as z:
        schema: dict[str, Any] = json.loads(z.read("compose/config/compose_spec.json"))
    return schema


def test_compose_file_follows_the_compose_specification(compose_schema):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    jsonschema.Draft201909Validator(compose_schema).validate(compose)
    services = compose["services"]
    assert {
        "kafka",
        "adapter",
        "meta-trainer",
        "simulator",
        "labeller",
        "prometheus",
        "grafana",
    } <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    gpu = services["meta-trainer-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    broken = copy.deepcopy(compose)
    broken["services"]["adapter"]["restartt"] = "always"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(compose_schema).validate(broken)


def test_grafana_dashboard_and_provisioning():
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "streamlearn.json").read_text())
    assert dash["uid"] == "streamlearn"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for needed in (
        "streamlearn_regret",
        "streamlearn_rolling_accuracy",
        "streamlearn_step_size",
        "streamlearn_queries_total",
        "streamlearn_label_latency_seconds_bucket",
        "streamlearn_consumer_lag_records",
        "streamlearn_model_version",
    ):
        assert needed in exprs
    assert any("drift" in a["expr"] for a in dash["annotations"]["list"])
    ds = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    assert ds["datasources"][0]["uid"] == dash["templating"]["list"][0]["current"]["value"]


def test_dockerfile_is_non_root_with_the_cli_entrypoint_and_a_gpu_variant():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "USER 10001" in text
    assert 'ENTRYPOINT ["streamlearn"]' in text
    assert "HEALTHCHECK" in text
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
