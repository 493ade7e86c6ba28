"""The Helm chart, with the real helm binary: lint, render, validate every
manifest against Kubernetes' schemas, and check what it renders is the
connector's own valid config, rules and dashboard."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "bybit-kafka-connector"
FULL = Path(__file__).parent / "values-full.yaml"
K8S_VERSION = kubernetes_validate.utils.latest_version()


def helm() -> str:
    for candidate in (os.environ.get("HELM"), str(ROOT / ".cache" / "bin" / "helm"),
                      shutil.which("helm")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("helm not found: run scripts/install_helm.sh (or set HELM)")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def render(*args: str) -> list[dict[str, Any]]:
    out = run("template", "test", str(CHART), *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("values", [[], ["-f", str(FULL)]], ids=["defaults", "full"])
def test_lint_strict(values: list[str]) -> None:
    run("lint", "--strict", str(CHART), *values)


@pytest.mark.parametrize("values", [[], ["-f", str(FULL)]], ids=["defaults", "full"])
def test_every_manifest_validates_against_kubernetes_schemas(values: list[str]) -> None:
    docs = render(*values)
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            assert doc["kind"] in ("ServiceMonitor", "PrometheusRule")
            assert doc["metadata"]["name"] and isinstance(doc["spec"], dict)
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kinds = {d["kind"] for d in docs}
    expected = {"ConfigMap", "Deployment", "Service", "ServiceAccount"}
    if values:
        expected |= {"ServiceMonitor", "PrometheusRule", "PodDisruptionBudget", "NetworkPolicy"}
    assert expected <= kinds


@pytest.mark.parametrize("values", [[], ["-f", str(FULL)]], ids=["defaults", "full"])
def test_rendered_config_passes_the_connectors_validate(values: list[str],
                                                        tmp_path: Path) -> None:
    config_map = next(d for d in by_kind(render(*values), "ConfigMap")
                      if "config.yaml" in d["data"])
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    env = {**os.environ, "BYBIT_API_KEY": "k", "BYBIT_API_SECRET": "s",
           "KAFKA_SASL_PASSWORD": "p", "SCHEMA_REGISTRY_PASSWORD": "p"}
    result = subprocess.run([sys.executable, "-m", "connector", "validate", "--config",
                             str(path)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_secrets_never_land_in_config_maps() -> None:
    docs = render("-f", str(FULL), "--set", "bybit.existingSecret=",
                  "--set", "bybit.apiKey=THE-API-KEY", "--set", "bybit.apiSecret=THE-SECRET")
    for cm in by_kind(docs, "ConfigMap"):
        text = json.dumps(cm)
        assert "THE-API-KEY" not in text and "THE-SECRET" not in text
    secret = by_kind(docs, "Secret")[0]
    assert set(secret["data"]) == {"key", "secret"}
    env = {e["name"]: e for e in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"][
        "containers"][0]["env"]}
    assert env["BYBIT_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert "value" not in env["BYBIT_API_SECRET"]
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kafka-credentials"


def test_pod_is_locked_down_and_probed() -> None:
    deployment = by_kind(render(), "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] > 30  # longer than the flush timeout
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_deployment_runs_what_the_image_provides() -> None:
    """The Deployment against the Dockerfile's final stage (no image is built in tests):
    the command it runs parses, with the image's config path, port and user."""
    sys.path.insert(0, str(ROOT / "tests" / "install"))
    from dockerfile import parse

    from connector.cli import parse_args

    image = parse()[-1]
    entrypoint = image.last("ENTRYPOINT").exec_form()
    cmd = image.last("CMD").exec_form()
    [config_copy] = [c.words() for c in image.all("COPY") if c.words()[0] == "config.yaml"]
    image_config = config_copy[-1]
    docs = render()
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]

    command = container.get("command", entrypoint) + container.get("args", cmd)
    assert command[0] == entrypoint[0] == "bybit-kafka-connector"
    for argv in (cmd, command[1:]):
        args, rest = parse_args(argv)  # exits (SystemExit) if the connector would
        assert (args.command, args.config, rest) == ("run", image_config, [])
    # The config the chart mounts is where the image and the command look for it.
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    config_map = next(d for d in by_kind(docs, "ConfigMap")
                      if d["metadata"]["name"] == volume["configMap"]["name"])
    assert image_config.startswith(mount["mountPath"].rstrip("/") + "/")
    assert image_config.removeprefix(mount["mountPath"].rstrip("/") + "/") in config_map["data"]
    # Port and user.
    assert [p["containerPort"] for p in container["ports"]] == [
        int(port.split("/")[0]) for port in image.last("EXPOSE").words()]
    user = image.last("USER").words()[0]
    assert str(pod["securityContext"]["runAsUser"]) == user
    assert str(container["securityContext"].get("runAsUser", user)) == user
    assert any(f"--uid {user}" in r.args for r in image.all("RUN"))


def test_config_change_rolls_the_pod() -> None:
    def checksum(*args: str) -> str:
        deployment = by_kind(render(*args), "Deployment")[0]
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum() == checksum()
    assert checksum() != checksum("--set", "config.kafka.dead_letter_topic=other")


def test_prometheus_rule_and_dashboard_are_the_tested_files(tmp_path: Path) -> None:
    docs = render("-f", str(FULL))
    rule = by_kind(docs, "PrometheusRule")[0]
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian package prometheus)"
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    dashboard = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith(
        "-dashboard"))
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["bybit-kafka-connector.json"] == (
        CHART / "files" / "dashboard.json").read_text()


@pytest.mark.parametrize(("flag", "message"), [
    ("replicaCount=two", "replicaCount"),
    ("config.subscriptions[0].stream=v9", "stream"),
    ("config.kafka.producer.lingerms=5", "lingerms"),
    ("service.port=70000", "port"),
])
def test_bad_values_fail_at_install_time(flag: str, message: str) -> None:
    result = run("template", "test", str(CHART), "--set", flag, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_values_schema_embeds_the_connectors_config_schema() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_values_schema

    committed = (CHART / "values.schema.json").read_text()
    assert committed == make_values_schema.render(), "run scripts/make_values_schema.py"


def test_chart_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(d: dict[str, Any], prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            if isinstance(v, dict) and v and k not in ("config", "resources", "podSecurityContext",
                                                       "securityContext", "labels"):
                out += keys(v, f"{prefix}{k}.")
            else:
                out.append(f"{prefix}{k}")
        return out

    missing = [k for k in keys(values) if f"`{k}`" not in readme]
    assert not missing, missing


PRIVATE = """
config:
  subscriptions:
    - {stream: v1, topic: trade, symbols: [BTCUSDT]}
    - {stream: private, topic: executionReport}
"""


def pod_env(docs: list[dict[str, Any]], external: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment the connector's container would get: plain values, and
    secretKeyRefs resolved from the rendered Secrets or from ``external`` ones."""
    secrets = {s["metadata"]["name"]: {k: base64.b64decode(v).decode()
                                       for k, v in s["data"].items()}
               for s in by_kind(docs, "Secret")}
    secrets.update(external)
    container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def validate_as_the_pod(docs: list[dict[str, Any]], tmp_path: Path,
                        external: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    config_map = next(d for d in by_kind(docs, "ConfigMap") if "config.yaml" in d["data"])
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BYBIT_", "KAFKA_", "SCHEMA_REGISTRY_"))}
    env.update(pod_env(docs, external or {}))
    result = subprocess.run([sys.executable, "-m", "connector", "validate", "--json",
                             "--config", str(path)], capture_output=True, text=True, env=env,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    plan: dict[str, Any] = json.loads(result.stdout)
    return plan


def test_chart_secret_wires_credentials_into_the_config(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(PRIVATE)
    docs = render("-f", str(values), "--set", "bybit.apiKey=THE-KEY",
                  "--set", "bybit.apiSecret=THE-SECRET")
    config = yaml.safe_load(by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"])
    assert config["bybit"]["credentials"] == {"api_key": "${BYBIT_API_KEY}",
                                              "api_secret": "${BYBIT_API_SECRET}"}
    assert "THE-KEY" not in json.dumps(by_kind(docs, "ConfigMap"))
    plan = validate_as_the_pod(docs, tmp_path)
    assert plan["connections"]["private"] == 1


def test_existing_secrets_are_wired_too(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(PRIVATE + """
  kafka:
    bootstrap_servers: ["kafka:9093"]
    security: {security_protocol: SASL_SSL, sasl_mechanism: PLAIN, sasl_plain_username: u}
  serialization:
    format: confluent
    schema_registry: {url: "http://registry:8081", username: u}
bybit: {existingSecret: bybit-credentials}
kafkaAuth: {existingSecret: kafka-credentials}
schemaRegistryAuth: {existingSecret: registry-credentials}
""")
    docs = render("-f", str(values))
    assert not by_kind(docs, "Secret")
    config = yaml.safe_load(by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"])
    assert config["kafka"]["security"]["sasl_plain_password"] == "${KAFKA_SASL_PASSWORD}"
    assert config["serialization"]["schema_registry"]["password"] == (
        "${SCHEMA_REGISTRY_PASSWORD}")
    validate_as_the_pod(docs, tmp_path, {
        "bybit-credentials": {"api-key": "k", "api-secret": "s"},
        "kafka-credentials": {"password": "p"}, "registry-credentials": {"password": "p"}})


def test_kafka_ca_secret_is_mounted_and_becomes_ssl_cafile(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(PRIVATE + """
  kafka:
    bootstrap_servers: ["kafka:9096"]
    security: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512,
               sasl_plain_username: u}
bybit: {existingSecret: bybit-credentials}
kafkaAuth: {existingSecret: kafka-credentials, caSecret: kafka-ca, caKey: root.pem}
""")
    docs = render("-f", str(values))
    config = yaml.safe_load(by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"])
    assert config["kafka"]["security"]["ssl_cafile"] == "/etc/kafka-ca/root.pem"
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["kafka-ca"] == {"name": "kafka-ca", "mountPath": "/etc/kafka-ca",
                                  "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "kafka-ca")
    assert volume["secret"] == {"secretName": "kafka-ca",
                                "items": [{"key": "root.pem", "path": "root.pem"}]}
    validate_as_the_pod(docs, tmp_path, {
        "bybit-credentials": {"api-key": "k", "api-secret": "s"},
        "kafka-credentials": {"password": "p"}})
    # A CA the config names itself is left alone.
    values.write_text(values.read_text().replace(
        "sasl_plain_username: u}", "sasl_plain_username: u, ssl_cafile: /mine/ca.pem}"))
    config = yaml.safe_load(by_kind(render("-f", str(values)), "ConfigMap")[0]["data"][
        "config.yaml"])
    assert config["kafka"]["security"]["ssl_cafile"] == "/mine/ca.pem"


def test_credentials_written_in_the_config_are_left_alone() -> None:
    docs = render("-f", str(FULL))
    config = yaml.safe_load(next(d for d in by_kind(docs, "ConfigMap")
                                 if "config.yaml" in d["data"])["data"]["config.yaml"])
    full = yaml.safe_load(FULL.read_text())["config"]
    assert config["bybit"]["credentials"] == full["bybit"]["credentials"]


@pytest.mark.parametrize("stream", ["private", "v5-private"])
def test_private_stream_without_credentials_fails_at_install(stream: str,
                                                             tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(PRIVATE.replace("stream: private", f"stream: {stream}"))
    # v5-private: the chart's rule holds for any stream ending in "private", whatever
    # streams the values schema knows today.
    result = run("template", "test", str(CHART), "-f", str(values), "--skip-schema-validation",
                 check=False)
    assert result.returncode != 0
    assert (f"config.subscriptions[1] subscribes the {stream} stream, which needs Bybit "
            "credentials") in result.stderr
    docs = render("-f", str(values), "--skip-schema-validation",
                  "--set", "bybit.apiKey=k", "--set", "bybit.apiSecret=s")
    config = yaml.safe_load(by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"])
    assert config["bybit"]["credentials"]["api_key"] == "${BYBIT_API_KEY}"


def test_replicas_share_the_work_out_of_the_box(tmp_path: Path) -> None:
    docs = render("--set", "replicaCount=3")
    config = yaml.safe_load(next(d for d in by_kind(docs, "ConfigMap")
                                 if "config.yaml" in d["data"])["data"]["config.yaml"])
    assert config["coordination"] == {"group": "test-bybit-kafka-connector", "shards": 12}
    deployment = by_kind(docs, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    # A rolling update uses the planned path, one hand-over at a time: the pod after
    # a hand-over is stopped only once its overlap and seeding are over.
    assert deployment["spec"]["minReadySeconds"] >= 12
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > yaml.safe_load((CHART / "values.yaml").read_text())["config"]["kafka"][
        "flush_timeout_seconds"] + 3
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert by_kind(docs, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # A standby is passed on, and the rollout waits for its take-over before the next pod.
    standby = render("--set", "replicaCount=3", "--set", "coordination.standby=1")
    config = yaml.safe_load(next(d for d in by_kind(standby, "ConfigMap")
                                 if "config.yaml" in d["data"])["data"]["config.yaml"])
    assert config["coordination"]["standby"] == 1
    assert by_kind(standby, "Deployment")[0]["spec"]["minReadySeconds"] >= 23
    # One replica stays as it was: no coordination, Recreate, no PDB, no anti-affinity.
    single = render()
    assert "coordination" not in yaml.safe_load(next(
        d for d in by_kind(single, "ConfigMap") if "config.yaml" in d["data"])["data"][
        "config.yaml"])
    assert not by_kind(single, "PodDisruptionBudget")
    assert "affinity" not in by_kind(single, "Deployment")[0]["spec"]["template"]["spec"]


def test_explicit_coordination_and_affinity_are_kept() -> None:
    docs = render("-f", str(FULL))
    config = yaml.safe_load(next(d for d in by_kind(docs, "ConfigMap")
                                 if "config.yaml" in d["data"])["data"]["config.yaml"])
    assert config["coordination"] == {"group": "bybit-prod", "shards": 24}
    affinity = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["affinity"]
    assert "nodeAffinity" in affinity  # the user's, merged with the anti-affinity
    assert affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    own = render("--set", "replicaCount=2", "--set-json",
                 'config.coordination={"group": "mine", "shards": 6}',
                 "--set-json", 'affinity={"podAntiAffinity": {}}')
    config = yaml.safe_load(next(d for d in by_kind(own, "ConfigMap")
                                 if "config.yaml" in d["data"])["data"]["config.yaml"])
    assert config["coordination"] == {"group": "mine", "shards": 6}
    assert by_kind(own, "Deployment")[0]["spec"]["template"]["spec"]["affinity"] == {
        "podAntiAffinity": {}}
