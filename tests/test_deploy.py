"""Deployment files agree with the code: settings names, topics, consumer groups, ports and metric names."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from events.export import CONSUMERS
from services.infra.bus import ALL_TOPICS
from services.infra.metrics import exposed_metrics
from services.infra.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMTOOL = shutil.which("promtool")
#: One-shot jobs and the Ray worker serve nothing, so they publish no ports.
NO_PORTS = {"kafka-init", "ollama-pull", "ray-worker"}
#: Labels Prometheus adds at scrape time (job/instance) or our scrape configs add (service).
TARGET_LABELS = frozenset({"job", "instance", "service"})
PROMETHEUS_BUILTINS = {"up": TARGET_LABELS}


# --- helpers ----------------------------------------------------------------------------------------------


def env_names() -> set[str]:
    """Every environment variable name Settings reads."""
    names: set[str] = set()
    for field_name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"QUERYLIFT_{field_name.upper()}")
    return names


def looks_like_setting(name: str) -> bool:
    aliases = {n for n in env_names() if not n.startswith("QUERYLIFT_")}
    return name.startswith("QUERYLIFT_") or name in aliases


def assert_settings_env(env: dict[str, Any], where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names map to real fields, and the values are ones Settings accepts."""
    known = env_names()
    unknown = sorted(k for k in env if looks_like_setting(k) and k not in known)
    assert not unknown, f"{where}: {unknown} are not Settings fields (services/infra/settings.py)"
    with monkeypatch.context() as m:
        for name in known:
            m.delenv(name, raising=False)
        for name, value in env.items():
            if looks_like_setting(name):
                m.setenv(name, "" if value is None else str(value))
        Settings(_env_file=None)  # type: ignore[call-arg]


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"querylift_deploy_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
}
_KEYWORDS |= {"inf", "nan"}
_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def promql_refs(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """(metric names with the label names their selectors use, labels used in by/on/... clauses)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    refs: list[tuple[str, set[str]]] = []
    for name, body in re.findall(rf"({_IDENT})\s*\{{([^}}]*)\}}", text):
        refs.append((name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body))))
    grouping: set[str] = set()
    for body in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        grouping.update(label.strip() for label in body.split(",") if label.strip())
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    for match in re.finditer(rf"(?<![\w.$]){_IDENT}", bare):
        name = match.group(0)
        if name in _KEYWORDS or re.match(r"\s*\(", bare[match.end() :]):
            continue
        if not any(name == n for n, _ in refs):
            refs.append((name, set()))
    return refs, grouping


def check_promql(expr: str, where: str, *, builtins: dict[str, frozenset[str]] | None = None) -> list[str]:
    known: dict[str, frozenset[str]] = dict(exposed_metrics()) | (builtins or {})
    problems = []
    refs, grouping = promql_refs(expr)
    assert refs, f"{where}: no metric in {expr!r}"
    available: set[str] = set(TARGET_LABELS)
    for name, labels in refs:
        if name not in known:
            problems.append(f"{where}: unknown metric {name!r} in {expr!r}")
            continue
        available |= known[name]
        extra = labels - known[name] - TARGET_LABELS
        if extra:
            problems.append(f"{where}: {name} has no label(s) {sorted(extra)}")
    missing = grouping - available - {"le"}
    if missing:
        problems.append(f"{where}: grouping by unknown label(s) {sorted(missing)} in {expr!r}")
    return problems


def promtool_check_exprs(exprs: dict[str, str], tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule: real PromQL syntax checking."""
    if PROMTOOL is None:
        return
    rules = {
        "groups": [
            {
                "name": "exprs",
                "rules": [{"record": f"check:{i}", "expr": e} for i, e in enumerate(exprs.values())],
            }
        ]
    }
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the PromQL checker itself ------------------------------------------------------------------------------


def test_promql_checker_finds_unknown_metrics_and_labels() -> None:
    assert check_promql('sum by (project) (rate(querylift_answers_total{arm="control"}[5m]))', "ok") == []
    assert check_promql("rate(querylift_no_such_metric_total[5m])", "x")
    assert check_promql('sum(querylift_answers_total{question="why"})', "x")
    assert check_promql("sum by (question) (querylift_answers_total)", "x")
    assert check_promql("up == 0", "x")  # not a querylift metric unless allowed
    assert check_promql("up == 0", "x", builtins=PROMETHEUS_BUILTINS) == []
    refs, _ = promql_refs(
        "histogram_quantile(0.95, sum by (le) (rate(querylift_stage_duration_seconds_bucket[5m] offset 1d)))"
    )
    assert [name for name, _ in refs] == ["querylift_stage_duration_seconds_bucket"]


# --- docker-compose.yml -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_are_complete(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "kafka",
        "kafka-init",
        "postgres",
        "weaviate",
        "ray-head",
        "ray-worker",
        "ollama",
        "prometheus",
        "grafana",
    }
    assert expected | {c.name for c in CONSUMERS} <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name}: no image or build"
        if name not in NO_PORTS:
            assert svc.get("ports"), f"{name}: publishes no ports"
        for dep in svc.get("depends_on") or []:
            assert dep in services, f"{name} depends on unknown service {dep}"
    assert services["postgres"]["image"].startswith("pgvector/pgvector:pg17")
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "# deploy:" in (ROOT / "docker-compose.yml").read_text()  # the GPU reservation, commented


def test_compose_consumers_run_their_service_on_the_up_ports(compose: dict[str, Any]) -> None:
    for i, consumer in enumerate(CONSUMERS):
        svc = compose["services"][consumer.name]
        assert svc["command"] == ["run", consumer.name]
        assert svc["build"] == "." and svc["image"] == "querylift:local"
        assert svc["ports"] == [f"{9400 + i}:9400"]
        env = svc["environment"]
        assert env["QUERYLIFT_METRICS_PORT"] == "9400" and env["QUERYLIFT_METRICS_HOST"] == "0.0.0.0"
        assert env["QUERYLIFT_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["QUERYLIFT_LLM_BACKEND"] == "ollama" and env["OLLAMA_URL"] == "http://ollama:11434"
        assert env["QUERYLIFT_VECTOR_BACKEND"] == "weaviate" and env["QUERYLIFT_WEAVIATE_URL"].startswith(
            "http://weaviate"
        )
        assert env["RAY_ADDRESS"].startswith("ray://ray-head:")


def test_compose_environment_names_are_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = 0
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        assert_settings_env(env, f"docker-compose service {name}", monkeypatch)
        checked += sum(1 for k in env if looks_like_setting(k))
    assert checked >= 5 * 10


def test_compose_rejects_a_misspelled_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError, match="QUERYLIFT_KAFKA_BOOTSTRAP"):
        assert_settings_env({"QUERYLIFT_KAFKA_BOOTSTRAP": "kafka:9092"}, "x", monkeypatch)


def test_compose_creates_every_topic(compose: dict[str, Any]) -> None:
    script = " ".join(compose["services"]["kafka-init"]["command"])
    created = set(re.findall(r"[a-z_]+\.[a-z_.]+", script.split("; do")[0]))
    assert created == set(ALL_TOPICS)
    assert "querylift.dlq" in created


def test_compose_mounts_prometheus_and_grafana_config(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mounts = {
        v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"] if v.startswith("./")
    }
    assert mounts["/etc/prometheus"] == "./deploy/prometheus"
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"] if v.startswith("./")}
    assert grafana["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/querylift.yml").read_text())
    dash_path = provider["providers"][0]["options"]["path"]
    assert (ROOT / grafana[dash_path]).resolve() == (DEPLOY / "grafana/dashboards").resolve()
    for source in [*mounts.values(), *grafana.values()]:
        assert (ROOT / source).is_dir()


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text
    assert 'pip install ".[ml,weaviate]"' in text
    assert 'ENTRYPOINT ["querylift"]' in text
    for path in re.findall(r"^COPY (?!--)(\S+)", text, flags=re.M):
        if "*" not in path:
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"


# --- Kubernetes ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                doc["__file"] = path.name
                docs.append(doc)
    return docs


def _of(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_manifest_has_identity(k8s: list[dict[str, Any]]) -> None:
    assert len(k8s) >= 5 * 3 + 4
    for doc in k8s:
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), doc[
            "__file"
        ]
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "querylift", (doc["kind"], doc["metadata"]["name"])
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_k8s_settings_are_real(k8s: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    config = _of(k8s, "ConfigMap")["querylift-settings"]["data"]
    secret = _of(k8s, "Secret")["querylift-secrets"]["stringData"]
    assert set(secret) == {"DATABASE_URL", "OPENAI_API_KEY"}
    assert_settings_env(config | secret, "k8s ConfigMap/Secret", monkeypatch)
    assert all(looks_like_setting(k) for k in config | secret), "every key should be a setting"
    for deployment in _of(k8s, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert_settings_env(env, deployment["metadata"]["name"], monkeypatch)


def test_k8s_deployments(k8s: list[dict[str, Any]]) -> None:
    deployments = _of(k8s, "Deployment")
    claims = set(_of(k8s, "PersistentVolumeClaim"))
    assert set(deployments) == {f"querylift-{c.name}" for c in CONSUMERS}
    for consumer in CONSUMERS:
        dep = deployments[f"querylift-{consumer.name}"]
        template = dep["spec"]["template"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9400"
        (container,) = template["spec"]["containers"]
        assert container["args"] == ["run", consumer.name]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"metrics": 9400}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        refs = {r.get("configMapRef", r.get("secretRef", {})).get("name") for r in container["envFrom"]}
        assert refs == {"querylift-settings", "querylift-secrets"}
        for volume in template["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_k8s_scaled_objects_follow_consumer_group_lag(k8s: list[dict[str, Any]]) -> None:
    deployments = _of(k8s, "Deployment")
    scaled = _of(k8s, "ScaledObject")
    config = _of(k8s, "ConfigMap")["querylift-settings"]["data"]
    prefix = config.get("QUERYLIFT_TOPIC_PREFIX", "")
    partitions = int(config.get("QUERYLIFT_TOPIC_PARTITIONS", 6))
    assert len(scaled) == len(CONSUMERS)
    for consumer in CONSUMERS:
        so = next(
            s for s in scaled.values() if s["spec"]["scaleTargetRef"]["name"] == f"querylift-{consumer.name}"
        )
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert so["spec"]["scaleTargetRef"]["name"] in deployments
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= partitions
        topics = set()
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] == "kafka"
            meta = trigger["metadata"]
            assert meta["consumerGroup"] == consumer.group_id
            assert meta["bootstrapServers"] == config["QUERYLIFT_KAFKA_BOOTSTRAP_SERVERS"]
            assert int(meta["lagThreshold"]) >= 1 and isinstance(meta["lagThreshold"], str)
            topics.add(meta["topic"])
        assert topics == {prefix + t for t in consumer.receives}


def test_k8s_metrics_services_select_the_consumers(k8s: list[dict[str, Any]]) -> None:
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in _of(k8s, "Deployment").values()]
    services = _of(k8s, "Service")
    assert len(services) == len(CONSUMERS)
    for svc in services.values():
        selector = svc["spec"]["selector"]
        assert sum(1 for labels in pods if selector.items() <= labels.items()) == 1, svc["metadata"]["name"]
        assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


def test_k8s_ray_cluster(k8s: list[dict[str, Any]]) -> None:
    (cluster,) = _of(k8s, "RayCluster").values()
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 10001}
    assert spec["workerGroupSpecs"], "no worker group"
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    config = _of(k8s, "ConfigMap")["querylift-settings"]["data"]
    assert config["RAY_ADDRESS"].startswith(f"ray://{cluster['metadata']['name']}-head-svc")
    try:
        ray_version = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return
    assert spec["rayVersion"] == ray_version, "RayCluster rayVersion must match the image's Ray"


def test_kubectl_kustomize_builds(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout) if d]
    assert kinds.count("Deployment") == len(CONSUMERS) and kinds.count("ScaledObject") == len(CONSUMERS)


# --- Prometheus ----------------------------------------------------------------------------------------------


def _targets(config: dict[str, Any]) -> list[tuple[str, str]]:
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "querylift"]
    return [(t, sc["labels"]["service"]) for sc in job["static_configs"] for t in sc["targets"]]


def test_prometheus_scrapes_the_five_consumers() -> None:
    compose = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert _targets(compose) == [(f"{c.name}:9400", c.name) for c in CONSUMERS]
    local = yaml.safe_load((DEPLOY / "prometheus/prometheus-local.yml").read_text())
    assert _targets(local) == [(f"127.0.0.1:{9400 + i}", c.name) for i, c in enumerate(CONSUMERS)]
    for config in (compose, local):
        for rule_file in config["rule_files"]:
            assert (DEPLOY / "prometheus" / rule_file).is_file()


def test_alert_rules_use_real_metrics(tmp_path: Path) -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {
        "QueryliftSqlSuccessRateLow",
        "QueryliftConsumerLagGrowing",
        "QueryliftDeadLetters",
        "QueryliftConsumerDown",
    } <= set(alerts)
    problems = []
    for name, rule in alerts.items():
        problems += check_promql(rule["expr"], name, builtins=PROMETHEUS_BUILTINS)
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install -y prometheus)")
def test_promtool_accepts_config_and_rules() -> None:
    assert PROMTOOL is not None
    for name in ("prometheus.yml", "prometheus-local.yml"):
        result = subprocess.run(
            [PROMTOOL, "check", "config", str(DEPLOY / "prometheus" / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((DEPLOY / "grafana/dashboards").glob("*.json"))}


def test_dashboards_are_generated_by_the_builder(dashboards: dict[str, dict[str, Any]]) -> None:
    builder = load_module(DEPLOY / "grafana/build_dashboards.py")
    rendered = builder.render()
    assert set(rendered) == set(dashboards)
    for name, content in rendered.items():
        on_disk = (DEPLOY / "grafana/dashboards" / name).read_text()
        assert on_disk == content, f"{name} is stale: run python deploy/grafana/build_dashboards.py"


def test_dashboards_cover_the_brief(dashboards: dict[str, dict[str, Any]]) -> None:
    titles = {d["title"] for d in dashboards.values()}
    assert any("Accuracy" in t for t in titles) and any("Latency" in t for t in titles)
    assert any("Throughput" in t for t in titles) and any("Training" in t for t in titles)
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    ds_uid = datasource["datasources"][0]["uid"]
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    for dash in dashboards.values():
        ids = [p["id"] for p in dash["panels"]]
        assert len(set(ids)) == len(ids)
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == ds_uid
            assert panel["targets"] and panel["gridPos"]["w"] <= 24


def test_every_panel_queries_real_metrics(dashboards: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    problems: list[str] = []
    exprs: dict[str, str] = {}
    for name, dash in dashboards.items():
        for panel in dash["panels"]:
            for target in panel["targets"]:
                where = f"{name} / {panel['title']} / {target['refId']}"
                problems += check_promql(target["expr"], where)
                # Grafana's variables, replaced by values Prometheus accepts, for the syntax check.
                exprs[where] = target["expr"].replace("$__rate_interval", "5m").replace("$project", ".*")
        for variable in dash["templating"]["list"]:
            metric = re.search(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert metric, variable
            assert metric.group(2) in exposed_metrics()[metric.group(1)]
    assert not problems, "\n".join(problems)
    assert len(exprs) >= 30
    promtool_check_exprs(exprs, tmp_path)
