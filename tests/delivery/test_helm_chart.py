"""The Helm chart: lints clean, renders valid Kubernetes objects, and keeps its promises.

Charts are linted and rendered by Helm's own Go engine through `helm_python`, offline;
every rendered object is checked against the Kubernetes JSON schemas that
`kubernetes-validate` bundles, in strict mode (unknown fields fail).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

RELEASE = "atlas-broker"
NAMESPACE = "platform"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate bundles.
KUBE_VERSIONS = ("1.29", "1.37")
# Severity 2 is a warning, 3 an error (helm_python.lint).
LINT_WARNING = 2
TMP_MOUNT = "/tmp"  # noqa: S108 - the pod's one writable mount, not a temporary file

ADMIN_KEY_SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    # AppRole credentials from an existing Secret, scraped by the Prometheus Operator.
    "approle-and-servicemonitor": {
        "vault": {
            "addr": "https://vault.vault.svc:8200",
            "auth": {"method": "approle", "approle": {"existingSecret": "atlas-broker-approle"}},
        },
        "broker": {"idpUrl": "https://login.atlas.example.com", "auditRetentionDays": 90},
        "redis": {"url": "redis://redis-master.redis.svc:6379/0"},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "policy": {
            "document": {
                "callers": [
                    {
                        "name": "secops",
                        "api_key_sha256": ADMIN_KEY_SHA256,
                        "roles": ["admin"],
                        "realms": ["*"],
                    },
                    {
                        "name": "ledger",
                        "jwt_subject": "system:serviceaccount:payments:ledger",
                        "realms": ["acme"],
                    },
                ],
                "jwt_issuers": [
                    {
                        "issuer": "https://kubernetes.default.svc.cluster.local",
                        "jwks_url": "https://kubernetes.default.svc.cluster.local/openid/v1/jwks",
                        "audience": "atlas-broker",
                    },
                ],
            }
        },
    },
    # Vault Kubernetes auth, a fixed replica count, narrowed egress and a settings file.
    "kubernetes-auth-fixed-replicas": {
        "replicaCount": 3,
        "autoscaling": {"enabled": False},
        "image": {
            "repository": "registry.internal/atlas/atlas-broker",
            "digest": "sha256:" + "ab" * 32,
        },
        "vault": {
            "addr": "https://vault.internal:8200",
            "auth": {"method": "kubernetes", "kubernetes": {"role": "atlas-broker-prod"}},
        },
        "redis": {"url": "rediss://redis.internal:6380/0"},
        "broker": {"config": {"vault_timeout": 10}, "vaultPollSeconds": 60},
        "networkPolicy": {
            "ingress": {
                "from": [{"namespaceSelector": {"matchLabels": {"atlas-broker/client": "true"}}}]
            },
            "egress": {
                "vault": {"cidrs": ["10.20.0.0/16"], "ports": [8200]},
                "redis": {
                    "peers": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "redis"}
                            }
                        }
                    ],
                    "ports": [6380],
                },
                "idp": {"cidrs": ["203.0.113.0/24"], "ports": [443]},
            },
        },
        "topologySpread": {"whenUnsatisfiable": "DoNotSchedule"},
    },
    # Redis Sentinel URL from a Secret, a policy ConfigMap managed elsewhere, no NetworkPolicy.
    "sentinel-secret-and-existing-policy": {
        "vault": {
            "addr": "http://openbao.openbao.svc:8200",
            "auth": {"method": "token", "token": {"existingSecret": "atlas-broker-vault"}},
        },
        "redis": {"existingSecret": "atlas-broker-redis", "existingSecretKey": "url"},
        "policy": {"existingConfigMap": "atlas-callers", "key": "callers.yaml"},
        "networkPolicy": {"enabled": False},
        "podDisruptionBudget": {"minAvailable": "50%"},
    },
    # A private CA, extra volumes and variables, alerts and a dashboard, scraped by the Operator.
    "ca-bundle-and-monitoring": {
        "vault": {"addr": "https://vault.internal:8200"},
        "redis": {"url": "rediss://redis.internal:6380/0"},
        "caBundle": {"configMap": "internal-ca", "key": "bundle.pem"},
        "broker": {"extraEnv": [{"name": "BROKER_WORKERS", "value": "2"}]},
        "extraVolumes": [{"name": "redis-client", "secret": {"secretName": "redis-client"}}],
        "extraVolumeMounts": [
            {"name": "redis-client", "mountPath": "/etc/redis-client", "readOnly": True}
        ],
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "dashboard": {"enabled": True},
    },
}
# Prometheus Operator kinds: kubernetes-validate bundles only built-in kinds.
OPERATOR_KINDS = ("ServiceMonitor", "PrometheusRule")


def _chart_path() -> str:
    return str(Path(__file__).resolve().parents[2] / "helm" / "atlas-broker")


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(_chart_path()) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if not path.endswith(".txt"):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def _validate_values(values: dict[str, Any]) -> None:
    with helm.Chart.load(_chart_path()) as chart:
        chart.validate_schema(values)


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found


def _kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {obj["kind"] for obj in objects}


def _pod(values: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = _one(_render(values), "Deployment")["spec"]["template"]
    return template


def _container(values: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod(values)["spec"]["containers"]
    (container,) = containers
    return container


def _env(values: dict[str, Any]) -> dict[str, Any]:
    """Environment variables by name: the value, or the `valueFrom` reference."""
    env = _container(values)["env"]
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in env}


def _secret_ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


def _with(**overrides: Any) -> dict[str, Any]:
    return copy.deepcopy(overrides)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_lints_without_warnings(scenario: str) -> None:
    """`helm lint --strict` finds nothing worse than an informational note."""
    report = helm.lint(_chart_path(), SCENARIOS[scenario], strict=True, namespace=NAMESPACE)

    findings = [m for m in report["messages"] if m["severity"] >= LINT_WARNING]
    assert ([], []) == (findings, report["errors"])


def _objects_by_scenario() -> list[Any]:
    """One case per rendered object, scenario and Kubernetes version (rendered at collection)."""
    crd = pytest.mark.skip(
        reason="a Prometheus Operator CRD; kubernetes-validate bundles only built-in kinds, "
        "so its shape is tested on its own"
    )
    cases = []
    for scenario, values in SCENARIOS.items():
        for obj in _render(values):
            marks = [crd] if obj["kind"] in OPERATOR_KINDS else []
            for version in KUBE_VERSIONS:
                case_id = f"{scenario}-{obj['kind']}-{version}"
                cases.append(pytest.param(obj, version, id=case_id, marks=marks))
    return cases


@pytest.mark.parametrize(("obj", "kube_version"), _objects_by_scenario())
def test_rendered_object_matches_the_kubernetes_schema(
    obj: dict[str, Any], kube_version: str
) -> None:
    """A rendered object validates strictly (no unknown fields) against the Kubernetes schema."""
    kubernetes_validate.validate(obj, kube_version, strict=True)


def test_defaults_render_the_expected_objects() -> None:
    """Default values render seven objects and the `helm test` pod: no ServiceMonitor, no
    PrometheusRule, no settings or dashboard ConfigMap."""
    kinds = _kinds(_render({}))

    assert {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Pod",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    } == kinds


def test_service_monitor_scrapes_metrics_on_the_metrics_port() -> None:
    """An enabled ServiceMonitor scrapes /metrics on the Service's `metrics` port."""
    objects = _render(SCENARIOS["approle-and-servicemonitor"])
    monitor = _one(objects, "ServiceMonitor")
    service = _one(objects, "Service")

    assert "monitoring.coreos.com/v1" == monitor["apiVersion"]
    assert [{"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}] == (
        monitor["spec"]["endpoints"]
    )
    assert service["spec"]["selector"] == monitor["spec"]["selector"]["matchLabels"]
    assert "kube-prometheus-stack" == monitor["metadata"]["labels"]["release"]


def test_service_monitor_is_off_by_default() -> None:
    """Without the Prometheus Operator's CRDs installed, the default chart still installs."""
    assert "ServiceMonitor" not in _kinds(_render({}))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_runs_as_non_root_user_10001(scenario: str) -> None:
    """The pod and its container refuse to run as root and use the image's user 10001."""
    pod = _pod(SCENARIOS[scenario])["spec"]
    (container,) = pod["containers"]

    for context in (pod["securityContext"], container["securityContext"]):
        assert (True, 10001) == (context["runAsNonRoot"], context["runAsUser"])


def test_container_root_file_system_is_read_only() -> None:
    """The container's root file system is read-only; only the /tmp and audit spool
    emptyDirs are writable."""
    pod = _pod({})["spec"]
    (container,) = pod["containers"]
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")

    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert ([TMP_MOUNT, "/var/lib/atlas-broker/audit"], "64Mi") == (
        writable,
        tmp["emptyDir"]["sizeLimit"],
    )


def test_audit_spool_uses_an_existing_claim_when_given() -> None:
    """With auditSpool.existingClaim the spool survives a pod's replacement on that claim,
    and the broker is told where it is mounted."""
    pod = _pod({"auditSpool": {"existingClaim": "atlas-audit"}})["spec"]
    spool = next(v for v in pod["volumes"] if v["name"] == "audit-spool")
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert {"claimName": "atlas-audit"} == spool["persistentVolumeClaim"]
    assert "/var/lib/atlas-broker/audit" == env["BROKER_AUDIT_SPOOL_DIR"]


def test_tls_secret_is_mounted_and_served_with_https_probes() -> None:
    """With tls.secretName the Secret is mounted as a directory, the broker is told where its
    certificate, key and client CA are, and the probes speak HTTPS."""
    pod = _pod({"tls": {"secretName": "broker-tls", "clientCA": True}})["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert {"secretName": "broker-tls"} == volume["secret"]
    assert (
        "/etc/atlas-broker/tls/tls.crt",
        "/etc/atlas-broker/tls/tls.key",
        "/etc/atlas-broker/tls/ca.crt",
    ) == (env["BROKER_TLS_CERT_FILE"], env["BROKER_TLS_KEY_FILE"], env["BROKER_TLS_CLIENT_CA_FILE"])
    assert {"HTTPS"} == {
        container[probe]["httpGet"]["scheme"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }


def test_helm_test_pod_speaks_https_with_tls() -> None:
    """With tls.secretName the `helm test` pod asks /readyz over HTTPS."""
    objects = _render({"tls": {"secretName": "broker-tls"}})
    pod = next(o for o in objects if o["kind"] == "Pod")
    command = "\n".join(pod["spec"]["containers"][0]["command"])
    assert "https://atlas-broker:80/readyz" in command


def test_policy_schema_takes_issuer_bound_and_certificate_callers() -> None:
    """Callers bound to a workload issuer, or identified by a client certificate, pass the
    chart's schema."""
    _validate_values(
        {
            "policy": {
                "document": {
                    "callers": [
                        {
                            "name": "ledger",
                            "jwt_subject": "system:serviceaccount:payments:ledger",
                            "jwt_issuer": "https://a.cluster.test",
                        },
                        {"name": "reports", "spiffe_id": "spiffe://atlas.test/ns/r/sa/reports"},
                        {"name": "audit", "cert_subject": "CN=audit,O=Atlas"},
                    ]
                }
            }
        }
    )


def test_container_cannot_gain_privileges() -> None:
    """No privilege escalation, every capability dropped, and the runtime's seccomp profile."""
    pod = _pod({})["spec"]
    (container,) = pod["containers"]

    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert ["ALL"] == container["securityContext"]["capabilities"]["drop"]
    assert {"type": "RuntimeDefault"} == pod["securityContext"]["seccompProfile"]


def test_probes_ask_healthz_for_liveness_and_readyz_for_readiness() -> None:
    """Liveness and start-up probe /healthz, readiness probes /readyz, all on the http port."""
    container = _container({})

    assert {
        "startupProbe": ("/healthz", "http"),
        "livenessProbe": ("/healthz", "http"),
        "readinessProbe": ("/readyz", "http"),
    } == {
        probe: (container[probe]["httpGet"]["path"], container[probe]["httpGet"]["port"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }


def test_pre_stop_sleep_fits_inside_the_grace_period() -> None:
    """The pod sleeps before SIGTERM so endpoints drain, for less than its grace period."""
    pod = _pod(_with(preStopSleepSeconds=8, terminationGracePeriodSeconds=40))
    (container,) = pod["spec"]["containers"]

    assert ["sleep", "8"] == container["lifecycle"]["preStop"]["exec"]["command"]
    assert 40 == pod["spec"]["terminationGracePeriodSeconds"]


def test_grace_period_not_longer_than_pre_stop_is_refused() -> None:
    """A grace period that the preStop sleep would use up fails to render."""
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds"):
        _render(_with(preStopSleepSeconds=30, terminationGracePeriodSeconds=30))


def test_pre_stop_hook_can_be_turned_off() -> None:
    """preStopSleepSeconds 0 removes the hook."""
    assert "lifecycle" not in _container(_with(preStopSleepSeconds=0))


def test_policy_is_mounted_as_a_whole_directory() -> None:
    """The policy ConfigMap is mounted without subPath, so kubelet propagates its changes."""
    mount = next(m for m in _container({})["volumeMounts"] if m["name"] == "policy")

    assert {"name": "policy", "mountPath": "/etc/atlas-broker/policy", "readOnly": True} == mount


def test_policy_file_setting_points_into_the_mounted_configmap() -> None:
    """BROKER_POLICY_FILE names the policy key inside the mounted ConfigMap directory."""
    objects = _render({})
    policy_map = _one(objects, "ConfigMap")
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "policy")
    (container,) = pod["containers"]
    env = {var["name"]: var.get("value") for var in container["env"]}

    assert policy_map["metadata"]["name"] == volume["configMap"]["name"]
    assert "/etc/atlas-broker/policy/policy.yaml" == env["BROKER_POLICY_FILE"]
    assert {"policy.yaml"} == set(policy_map["data"])


def test_policy_document_is_rendered_as_yaml() -> None:
    """The policy ConfigMap holds `policy.document` as the YAML the broker reads."""
    values = SCENARIOS["approle-and-servicemonitor"]
    policy_map = _one(_render(values), "ConfigMap")

    assert values["policy"]["document"] == yaml.safe_load(policy_map["data"]["policy.yaml"])


def test_policy_change_leaves_the_pod_template_unchanged() -> None:
    """Editing the caller policy does not roll the pods: no checksum of it on the template."""
    document = SCENARIOS["approle-and-servicemonitor"]["policy"]["document"]
    before = _pod({})
    after = _pod(_with(policy={"document": document}))

    assert before == after


def test_settings_file_change_rolls_the_pods() -> None:
    """A change to the BROKER_CONFIG settings file changes the pod template's checksum."""
    first = _pod(_with(broker={"config": {"vault_timeout": 5}}))["metadata"]["annotations"]
    second = _pod(_with(broker={"config": {"vault_timeout": 10}}))["metadata"]["annotations"]

    assert ["checksum/config"] == list(first)
    assert first["checksum/config"] != second["checksum/config"]


def test_existing_policy_configmap_replaces_the_rendered_one() -> None:
    """With policy.existingConfigMap the chart mounts that ConfigMap and renders none."""
    values = SCENARIOS["sentinel-secret-and-existing-policy"]
    objects = _render(values)
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "policy")

    assert "ConfigMap" not in _kinds(objects)
    assert "atlas-callers" == volume["configMap"]["name"]
    assert "/etc/atlas-broker/policy/callers.yaml" == _env(values)["BROKER_POLICY_FILE"]


def test_approle_credentials_come_from_the_existing_secret() -> None:
    """AppRole role_id and secret_id are read from the named Secret, never put in values."""
    env = _env(SCENARIOS["approle-and-servicemonitor"])

    assert _secret_ref("atlas-broker-approle", "role-id") == env["BROKER_VAULT_ROLE_ID"]
    assert _secret_ref("atlas-broker-approle", "secret-id") == env["BROKER_VAULT_SECRET_ID"]
    assert "BROKER_VAULT_K8S_ROLE" not in env


def test_approle_without_a_secret_is_refused() -> None:
    """AppRole auth without vault.auth.approle.existingSecret fails to render."""
    with pytest.raises(helm.HelmError, match="existingSecret"):
        _render(_with(vault={"auth": {"method": "approle"}}))


def test_vault_token_comes_from_the_existing_secret() -> None:
    """Token auth reads BROKER_VAULT_TOKEN from the named Secret."""
    env = _env(SCENARIOS["sentinel-secret-and-existing-policy"])

    assert _secret_ref("atlas-broker-vault", "token") == env["BROKER_VAULT_TOKEN"]


def test_kubernetes_auth_names_the_vault_role() -> None:
    """Kubernetes auth passes the Vault role in BROKER_VAULT_K8S_ROLE."""
    env = _env(SCENARIOS["kubernetes-auth-fixed-replicas"])

    assert "atlas-broker-prod" == env["BROKER_VAULT_K8S_ROLE"]


@pytest.mark.parametrize(
    ("scenario", "mounted"),
    [
        ("defaults", False),
        ("kubernetes-auth-fixed-replicas", False),
        ("approle-and-servicemonitor", False),
        ("sentinel-secret-and-existing-policy", False),
    ],
)
def test_default_service_account_token_is_not_mounted(scenario: str, mounted: bool) -> None:
    """The pod's default ServiceAccount token is not mounted: Kubernetes auth uses a
    projected token made for Vault, the other methods need none."""
    assert mounted is _pod(SCENARIOS[scenario])["spec"]["automountServiceAccountToken"]


def test_kubernetes_auth_uses_a_projected_token_with_the_vault_audience() -> None:
    """Under Kubernetes auth a projected token with audience `vault` is mounted and named
    by BROKER_VAULT_K8S_TOKEN_PATH."""
    pod = _pod({})
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "vault-token"]
    (mount,) = [
        m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "vault-token"
    ]
    source = volume["projected"]["sources"][0]["serviceAccountToken"]

    assert ("vault", 3600, "token") == (
        source["audience"],
        source["expirationSeconds"],
        source["path"],
    )
    assert mount["mountPath"] + "/token" == _env({})["BROKER_VAULT_K8S_TOKEN_PATH"]


def test_kubernetes_auth_without_audience_mounts_the_default_token() -> None:
    """An empty tokenAudience falls back to the automounted ServiceAccount token."""
    values = _with(vault={"auth": {"kubernetes": {"tokenAudience": ""}}})

    assert _pod(values)["spec"]["automountServiceAccountToken"] is True
    assert "BROKER_VAULT_K8S_TOKEN_PATH" not in _env(values)


def test_redis_url_comes_from_the_existing_secret() -> None:
    """A Redis URL carrying a password is read from the named Secret key."""
    env = _env(SCENARIOS["sentinel-secret-and-existing-policy"])

    assert _secret_ref("atlas-broker-redis", "url") == env["BROKER_REDIS_URL"]


def test_redis_sentinel_url_is_accepted_in_values() -> None:
    """A redis+sentinel:// URL passes the values schema and reaches BROKER_REDIS_URL."""
    url = "redis+sentinel://sentinel-0.redis:26379,sentinel-1.redis:26379/mymaster/0"

    assert url == _env(_with(redis={"url": url}))["BROKER_REDIS_URL"]


def test_memory_store_with_several_replicas_is_refused() -> None:
    """memory:// keeps tokens in one process, so it fails to render with more than one replica."""
    with pytest.raises(helm.HelmError, match="memory://"):
        _render(_with(redis={"url": "memory://"}))


def test_service_link_variables_are_disabled() -> None:
    """Kubernetes injects no Service variables that could shadow BROKER_PORT and friends."""
    assert _pod({})["spec"]["enableServiceLinks"] is False


def test_service_forwards_port_80_to_the_http_port() -> None:
    """The ClusterIP Service maps port 80, named http, to the container's http port (8080)."""
    objects = _render({})
    service = _one(objects, "Service")
    (container,) = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]

    assert "ClusterIP" == service["spec"]["type"]
    ports = service["spec"]["ports"]

    assert {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"} == ports[0]
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} == container["ports"][0]


def test_autoscaler_owns_the_replica_count_by_default() -> None:
    """With the HPA on (2 to 6 pods at 70% CPU) the Deployment leaves `replicas` to it."""
    objects = _render({})
    hpa = _one(objects, "HorizontalPodAutoscaler")

    assert "replicas" not in _one(objects, "Deployment")["spec"]
    assert (2, 6) == (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
    assert 70 == hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]


def test_fixed_replica_count_without_autoscaler() -> None:
    """With autoscaling off the Deployment runs replicaCount pods and no HPA is rendered."""
    objects = _render(SCENARIOS["kubernetes-auth-fixed-replicas"])

    assert 3 == _one(objects, "Deployment")["spec"]["replicas"]
    assert "HorizontalPodAutoscaler" not in _kinds(objects)


def test_disruption_budget_keeps_one_pod_available() -> None:
    """A PodDisruptionBudget keeps at least one broker serving through voluntary disruptions."""
    budget = _one(_render({}), "PodDisruptionBudget")

    assert 1 == budget["spec"]["minAvailable"]


def test_single_replica_gets_no_disruption_budget() -> None:
    """One replica with minAvailable 1 would block node drains, so no budget is rendered."""
    values = _with(replicaCount=1, autoscaling={"enabled": False})

    assert "PodDisruptionBudget" not in _kinds(_render(values))


def test_replicas_spread_softly_over_zones_and_nodes() -> None:
    """Default topology spread prefers distinct zones and nodes without blocking scheduling."""
    constraints = _pod({})["spec"]["topologySpreadConstraints"]

    assert [
        ("topology.kubernetes.io/zone", "ScheduleAnyway"),
        ("kubernetes.io/hostname", "ScheduleAnyway"),
    ] == [(c["topologyKey"], c["whenUnsatisfiable"]) for c in constraints]


def test_network_policy_admits_callers_only_on_the_http_port() -> None:
    """Ingress is limited to the http port from the configured peers."""
    policy = _one(_render(SCENARIOS["kubernetes-auth-fixed-replicas"]), "NetworkPolicy")

    assert {
        "ports": [{"port": "http", "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {"atlas-broker/client": "true"}}}],
    } == policy["spec"]["ingress"][0]


def test_network_policy_admits_only_the_scraper_to_the_metrics_port() -> None:
    """The metrics port is reachable only from the Prometheus pods of the monitoring namespace."""
    policy = _one(_render({}), "NetworkPolicy")

    assert {
        "ports": [{"port": "metrics", "protocol": "TCP"}],
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ],
    } == policy["spec"]["ingress"][1]


def test_schema_rejects_an_empty_metrics_peer_list() -> None:
    """An empty `metricsFrom` (which Kubernetes reads as "everyone") is refused."""
    with pytest.raises(Exception, match="metricsFrom"):
        _validate_values(_with(networkPolicy={"ingress": {"metricsFrom": []}}))


def test_metrics_listener_has_its_own_container_and_service_port() -> None:
    """BROKER_METRICS_PORT names the `metrics` container port, which the Service exposes."""
    objects = _render({})
    container = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    service_ports = {p["name"]: p for p in _one(objects, "Service")["spec"]["ports"]}

    assert {"name": "metrics", "containerPort": 9102, "protocol": "TCP"} in container["ports"]
    assert "9102" == _env({})["BROKER_METRICS_PORT"]
    assert "metrics" == service_ports["metrics"]["targetPort"]


def test_ca_bundle_is_mounted_and_named_for_every_tls_client() -> None:
    """The CA bundle ConfigMap is mounted read-only and named by REQUESTS_CA_BUNDLE (hvac)
    and SSL_CERT_FILE (httpx, redis)."""
    values = SCENARIOS["ca-bundle-and-monitoring"]
    pod = _pod(values)
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "ca-bundle"]
    (mount,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "ca-bundle"]
    env = _env(values)

    assert "internal-ca" == volume["configMap"]["name"]
    assert (True, "/etc/atlas-broker/ca") == (mount["readOnly"], mount["mountPath"])
    path = "/etc/atlas-broker/ca/bundle.pem"
    assert (path, path) == (env["REQUESTS_CA_BUNDLE"], env["SSL_CERT_FILE"])


def test_no_ca_bundle_leaves_the_default_trust_store() -> None:
    """Without a CA bundle no CA variable is set."""
    env = _env({})

    assert set() == {"REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"} & set(env)


def test_schema_rejects_a_ca_bundle_from_both_a_configmap_and_a_secret() -> None:
    """The CA bundle comes from one source."""
    with pytest.raises(Exception, match="caBundle"):
        _validate_values(_with(caBundle={"configMap": "a", "secret": "b"}))


def test_extra_env_volumes_and_mounts_reach_the_pod() -> None:
    """extraEnv, extraVolumes and extraVolumeMounts are added as given."""
    values = SCENARIOS["ca-bundle-and-monitoring"]
    pod = _pod(values)

    assert {"name": "redis-client", "secret": {"secretName": "redis-client"}} in pod["spec"][
        "volumes"
    ]
    assert {"name": "redis-client", "mountPath": "/etc/redis-client", "readOnly": True} in pod[
        "spec"
    ]["containers"][0]["volumeMounts"]
    assert "2" == _env(values)["BROKER_WORKERS"]


def test_helm_test_pod_asks_the_service_for_readyz() -> None:
    """`helm test` runs a pod, deleted once it succeeds, that fails unless /readyz answers 200."""
    (pod,) = [o for o in _render({}) if o["kind"] == "Pod"]
    command = "\n".join(pod["spec"]["containers"][0]["command"])

    assert "test" == pod["metadata"]["annotations"]["helm.sh/hook"]
    assert "hook-succeeded" in pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert "http://atlas-broker:80/readyz" in command
    assert "Never" == pod["spec"]["restartPolicy"]


def test_network_policy_egress_is_narrowed_to_the_configured_destinations() -> None:
    """Egress allows DNS, then Vault, Redis and the IdP on their ports to their CIDRs or peers."""
    policy = _one(_render(SCENARIOS["kubernetes-auth-fixed-replicas"]), "NetworkPolicy")
    egress = policy["spec"]["egress"]

    assert [
        [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        [{"port": 8200, "protocol": "TCP"}],
        [{"port": 6380, "protocol": "TCP"}],
        [{"port": 443, "protocol": "TCP"}],
    ] == [rule["ports"] for rule in egress]
    assert [
        [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "redis"}}}],
        [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
    ] == [rule["to"] for rule in egress[1:]]


def test_network_policy_can_be_turned_off() -> None:
    """networkPolicy.enabled false renders no NetworkPolicy."""
    assert "NetworkPolicy" not in _kinds(_render(SCENARIOS["sentinel-secret-and-existing-policy"]))


def test_image_digest_wins_over_the_tag() -> None:
    """A pinned digest is used as repository@digest."""
    image = _container(SCENARIOS["kubernetes-auth-fixed-replicas"])["image"]

    assert "registry.internal/atlas/atlas-broker@sha256:" + "ab" * 32 == image


def test_image_tag_defaults_to_the_app_version() -> None:
    """Without a tag or digest the image is tagged with the chart's appVersion."""
    assert "atlas-broker:0.1.0" == _container({})["image"]


def test_schema_rejects_an_unknown_top_level_key() -> None:
    """A misspelt top-level key fails schema validation instead of being ignored."""
    with pytest.raises(helm.HelmValuesError, match="replicaCont"):
        _validate_values({"replicaCont": 3})


def test_schema_rejects_a_misspelt_nested_key() -> None:
    """A misspelt key inside one of the chart's own sections fails schema validation."""
    with pytest.raises(helm.HelmValuesError, match="metod"):
        _validate_values({"vault": {"auth": {"metod": "approle"}}})


def test_schema_rejects_a_caller_key_that_is_not_a_sha256() -> None:
    """A caller's API key pasted into the policy instead of its SHA-256 fails validation."""
    callers = [{"name": "billing-api", "api_key_sha256": "plain-api-key", "realms": ["acme"]}]

    with pytest.raises(helm.HelmValuesError, match="api_key_sha256"):
        _validate_values({"policy": {"document": {"callers": callers}}})


def test_rendering_enforces_the_schema() -> None:
    """Rendering with invalid values fails, as `helm install` would."""
    with pytest.raises(helm.HelmValuesError):
        _render(_with(vault={"auth": {"method": "ldap"}}))


def test_forward_proxy_settings_and_api_egress_are_rendered() -> None:
    """broker.apiUrl and the forward limits become BROKER_* variables, and the
    NetworkPolicy gains an egress rule to the API's destinations on its ports."""
    values = copy.deepcopy(SCENARIOS["kubernetes-auth-fixed-replicas"])
    values["broker"].update(
        {"apiUrl": "https://api.is2.app", "forwardTimeout": 20, "forwardMaxBody": 1048576}
    )
    values["networkPolicy"]["egress"]["api"] = {"cidrs": ["198.51.100.0/24"], "ports": [443]}

    env = _env(values)
    egress = _one(_render(values), "NetworkPolicy")["spec"]["egress"]

    assert ("https://api.is2.app", "20", "1048576") == (
        env["BROKER_API_URL"],
        env["BROKER_FORWARD_TIMEOUT"],
        env["BROKER_FORWARD_MAX_BODY"],
    )
    assert {
        "ports": [{"port": 443, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}],
    } == egress[-1]


def test_schema_accepts_a_callers_scopes_and_refuses_one_with_a_space() -> None:
    """`scopes` on a caller entry passes the schema; a scope with a space does not."""
    caller = {"name": "reporting", "api_key_sha256": "a" * 64, "realms": ["acme"]}
    _validate_values(
        {"policy": {"document": {"callers": [{**caller, "scopes": ["reports.read"]}]}}}
    )

    with pytest.raises(helm.HelmValuesError, match="scopes"):
        _validate_values({"policy": {"document": {"callers": [{**caller, "scopes": ["a b"]}]}}})
