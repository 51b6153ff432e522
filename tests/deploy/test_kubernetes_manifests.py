"""``ofc render``: the Kubernetes manifests, checked offline against the Kubernetes schemas.

Every rendered object must validate (strict: an unknown field is an error) against the
schemas ``kubernetes-validate`` ships, for the oldest and the newest Kubernetes we claim;
then the behaviour an operator relies on is asserted object by object: the hosts and TLS
of the Ingress, the secrets each service mounts, probes and resources, and the
NetworkPolicies that keep user functions away from the platform.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # requirements-dev.txt: ships the schemas, works offline
import pytest
import yaml

from ofc.manifests import ValuesError, load_values, render, to_yaml, write_manifests

REPO = Path(__file__).resolve().parents[2]
# appArmorProfile (rootless BuildKit) is in the schema from 1.30 on.
KUBERNETES_VERSIONS = ("1.30", "1.37")
DOMAIN = "cloud.example.com"


def objects(**sets: object) -> list[dict[str, Any]]:
    base = {"domain": DOMAIN, "registry.address": "ghcr.io/acme/fns"}
    values = load_values(sets=[f"{k}={v}" for k, v in {**base, **sets}.items()])
    return [obj for m in render(values) for obj in m.objects]


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return find(objs, "Deployment", name)["spec"]["template"]["spec"]


def container(objs: list[dict[str, Any]], deployment: str, name: str) -> dict[str, Any]:
    return next(c for c in pod(objs, deployment)["containers"] if c["name"] == name)


def env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"]}


def mounted_secrets(spec: dict[str, Any], c: dict[str, Any]) -> dict[str, set[str]]:
    """mount path -> names of the Secrets whose keys appear there."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    out: dict[str, set[str]] = {}
    for m in c["volumeMounts"]:
        vol = volumes[m["name"]]
        if "secret" in vol:
            out[m["mountPath"]] = {vol["secret"]["secretName"]}
        elif "projected" in vol:
            out[m["mountPath"]] = {s["secret"]["name"] for s in vol["projected"]["sources"]}
    return out


def every_container(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objs:
        if o["kind"] == "Deployment":
            spec = o["spec"]["template"]["spec"]
            for c in spec["containers"]:
                yield f"{o['metadata']['name']}/{c['name']}", c


# -- schema ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "sets",
    [
        {},
        {"registry.mode": "internal"},
        {"builder.buildkit.rootless": "false", "tls.enabled": "false"},
        {"builder.registrySecret": "push-creds", "images.pullSecrets": "[pull-creds]"},
    ],
    ids=["external-registry", "internal-registry", "rootful-no-tls", "registry-credentials"],
)
def test_every_rendered_object_validates_against_the_kubernetes_schema(
    version: str, sets: dict[str, str]
) -> None:
    objs = objects(**sets)
    assert len(objs) >= 10
    for obj in objs:
        # Through YAML and back, as kubectl would read the file.
        data = yaml.safe_load(to_yaml([obj]))
        try:
            kubernetes_validate.validate(data, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc}")


def test_the_schema_check_catches_a_misspelt_field() -> None:
    # Guards the test above: strict validation must refuse a field Kubernetes ignores.
    deployment = find(objects(), "Deployment", "edge-router")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


# -- edge -----------------------------------------------------------------------------------------
def test_ingress_serves_users_system_and_auth_hosts_with_cert_manager_tls() -> None:
    ing = find(objects(), "Ingress", "ofc-edge")
    hosts = [r["host"] for r in ing["spec"]["rules"]]
    assert hosts == [f"*.{DOMAIN}", f"system.{DOMAIN}", f"auth.system.{DOMAIN}"]
    for rule in ing["spec"]["rules"]:
        (path,) = rule["http"]["paths"]
        assert path["backend"]["service"] == {"name": "edge-router", "port": {"number": 8080}}
    assert ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    assert ing["spec"]["tls"] == [{"hosts": hosts, "secretName": "ofc-edge-tls"}]
    assert ing["spec"]["ingressClassName"] == "nginx"


def test_ingress_with_a_namespaced_issuer_uses_the_issuer_annotation() -> None:
    ing = find(objects(**{"tls.issuerKind": "Issuer", "tls.issuer": "le"}), "Ingress", "ofc-edge")
    assert ing["metadata"]["annotations"] == {"cert-manager.io/issuer": "le"}


def test_ingress_without_tls_has_no_tls_section_nor_issuer() -> None:
    ing = find(objects(**{"tls.enabled": "false"}), "Ingress", "ofc-edge")
    assert "tls" not in ing["spec"]
    assert "annotations" not in ing["metadata"]


def test_router_knows_the_public_domain_and_reaches_gateway_and_auth_in_cluster() -> None:
    objs = objects()
    router = container(objs, "edge-router", "edge-router")
    assert env(router) | {
        "OFC_DOMAIN": DOMAIN,
        "OFC_PUBLIC_SCHEME": "https",
        "OFC_PUBLIC_PORT": "443",
        "OFC_GATEWAY_URL": "http://gateway.openfaas:8080",
        "OFC_AUTH_URL": "http://edge-auth.openfaas:8083",
        "OFC_ROUTER_HOST": "0.0.0.0",
    } == env(router)
    service = find(objs, "Service", "edge-router")
    assert service["spec"]["ports"][0]["targetPort"] == int(env(router)["OFC_ROUTER_PORT"])


def test_several_routers_get_a_disruption_budget_and_one_does_not() -> None:
    pdb = find(objects(), "PodDisruptionBudget", "edge-router")  # 2 replicas by default
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "edge-router"}}}
    assert not [o for o in objects(**{"router.replicas": 1}) if o["kind"] == "PodDisruptionBudget"]


def test_router_mounts_the_gateway_basic_auth_where_it_reads_it() -> None:
    objs = objects()
    router = container(objs, "edge-router", "edge-router")
    mounts = mounted_secrets(pod(objs, "edge-router"), router)
    assert mounts[env(router)["OFC_ROUTER_GATEWAY_SECRETS_DIR"]] == {"basic-auth"}


def test_auth_mounts_its_signing_key_and_client_secret_in_its_secrets_dir() -> None:
    objs = objects(**{"auth.oauthClientId": "Iv1.abc"})
    auth = container(objs, "edge-auth", "edge-auth")
    mounts = mounted_secrets(pod(objs, "edge-auth"), auth)
    names = mounts[env(auth)["OFC_AUTH_SECRETS_DIR"]]
    assert {"jwt-private-key", "jwt-public-key", "oauth-client-secret"} <= names
    assert env(auth)["OFC_OAUTH_CLIENT_ID"] == "Iv1.abc"
    projected = next(v for v in pod(objs, "edge-auth")["volumes"] if "projected" in v)
    optional = {
        s["secret"]["name"]: s["secret"]["optional"] for s in projected["projected"]["sources"]
    }
    # No signing key: the pod must not start; no client secret yet: it starts, /login says so.
    assert optional["jwt-private-key"] is False
    assert optional["oauth-client-secret"] is True


# -- builder --------------------------------------------------------------------------------------
def test_builder_builds_with_buildctl_against_its_own_loopback_buildkitd() -> None:
    objs = objects()
    spec = pod(objs, "of-builder")
    builder = container(objs, "of-builder", "builder")
    assert env(builder)["OFC_BUILDER_BACKEND"] == "buildkit"
    addr = env(builder)["OFC_BUILDKIT_ADDR"]
    assert addr.startswith("tcp://127.0.0.1:")
    buildkitd = container(objs, "of-builder", "buildkitd")
    assert buildkitd["args"][:2] == ["--addr", addr]
    # buildctl comes from the BuildKit image itself, into the folder OFC_BUILDCTL names.
    (init,) = spec["initContainers"]
    assert init["image"] == buildkitd["image"]
    copied_to = init["command"][-1]
    assert env(builder)["OFC_BUILDCTL"] == copied_to
    # BuildKit is never a Service: only the builder (which checks signatures) reaches it.
    ports = [p["port"] for o in objs if o["kind"] == "Service" for p in o["spec"]["ports"]]
    assert int(addr.rsplit(":", 1)[1]) not in ports


def test_builder_mounts_the_payload_secret_it_verifies_builds_with() -> None:
    objs = objects()
    builder = container(objs, "of-builder", "builder")
    mounts = mounted_secrets(pod(objs, "of-builder"), builder)
    secret_file = Path(env(builder)["OFC_PAYLOAD_SECRET_FILE"])
    assert mounts[str(secret_file.parent)] == {"payload-secret"}


def test_builder_service_keeps_the_name_stack_yml_calls_it_by() -> None:
    stack = (REPO / "stack.yml").read_text()
    assert "${BUILDER_URL:-http://of-builder.openfaas:8080}" in stack
    service = find(objects(), "Service", "of-builder")
    assert service["metadata"]["namespace"] == "openfaas"
    assert service["spec"]["ports"][0]["port"] == 8080


def test_builder_concurrency_and_timeout_come_from_values() -> None:
    objs = objects(**{"builder.concurrency": 5, "builder.timeout": "20m"})
    builder = container(objs, "of-builder", "builder")
    assert env(builder)["OFC_BUILDER_CONCURRENCY"] == "5"
    assert env(builder)["OFC_BUILDER_TIMEOUT"] == "20m"
    # A pod being replaced is given the time to finish the builds it has.
    assert pod(objs, "of-builder")["terminationGracePeriodSeconds"] >= 20 * 60


def test_rootless_buildkit_runs_unprivileged_and_rootful_is_privileged() -> None:
    rootless = container(objects(), "of-builder", "buildkitd")
    assert rootless["image"].endswith("-rootless")
    assert "privileged" not in rootless["securityContext"]
    assert rootless["securityContext"]["runAsUser"] == 1000
    assert "--oci-worker-no-process-sandbox" in rootless["args"]
    rootful = container(
        objects(**{"builder.buildkit.rootless": "false"}), "of-builder", "buildkitd"
    )
    assert rootful["securityContext"] == {"privileged": True}


def test_builder_gets_push_credentials_only_when_a_registry_secret_is_named() -> None:
    without = container(objects(), "of-builder", "builder")
    assert "DOCKER_CONFIG" not in env(without)
    objs = objects(**{"builder.registrySecret": "push-creds"})
    builder = container(objs, "of-builder", "builder")
    mounts = mounted_secrets(pod(objs, "of-builder"), builder)
    assert mounts[env(builder)["DOCKER_CONFIG"]] == {"push-creds"}


# -- registry -------------------------------------------------------------------------------------
def test_external_registry_renders_no_registry_objects() -> None:
    objs = objects()
    assert not [o for o in objs if o["metadata"]["name"].startswith("registry")]


def test_internal_registry_is_pulled_by_nodes_and_pushed_by_the_builder_at_one_address() -> None:
    objs = objects(**{"registry.mode": "internal", "registry.nodePort": 31555})
    node = find(objs, "Service", "registry-node")
    assert node["spec"]["type"] == "NodePort"
    assert node["spec"]["ports"][0]["nodePort"] == 31555
    forward = container(objs, "of-builder", "registry-forward")
    assert env(forward)["OFC_FORWARD_LISTEN"] == "127.0.0.1:31555"
    assert env(forward)["OFC_FORWARD_TARGET"] == "registry.openfaas:5000"
    toml = find(objs, "ConfigMap", "buildkitd-config")["data"]["buildkitd.toml"]
    assert '[registry."localhost:31555"]\n  http = true' in toml
    script = find(objs, "ConfigMap", "registry-forward")["data"]["registry-forward.py"]
    assert script == (REPO / "deploy" / "kubernetes" / "registry-forward.py").read_text()


# -- everything -----------------------------------------------------------------------------------
def test_every_container_has_requests_limits_and_both_probes() -> None:
    objs = objects(**{"registry.mode": "internal"})
    seen = set()
    for name, c in every_container(objs):
        seen.add(name)
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{name}: {kind}"
        assert "readinessProbe" in c and "livenessProbe" in c, name
    assert {
        "edge-router/edge-router",
        "edge-auth/edge-auth",
        "of-builder/builder",
        "of-builder/buildkitd",
        "of-builder/registry-forward",
        "registry/registry",
    } <= seen


@pytest.mark.parametrize("deployment", ["edge-router", "edge-auth", "of-builder"])
def test_our_python_services_run_as_non_root_on_a_read_only_root(deployment: str) -> None:
    objs = objects()
    spec = pod(objs, deployment)
    ours = spec["containers"][0]
    sc = ours["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert spec["automountServiceAccountToken"] is False


def test_replicas_and_images_come_from_values() -> None:
    objs = objects(
        **{
            "router.replicas": 4,
            "auth.replicas": 1,
            "images.prefix": "ghcr.io/acme/ofc",
            "images.tag": "v2",
        }
    )
    assert find(objs, "Deployment", "edge-router")["spec"]["replicas"] == 4
    assert (
        container(objs, "edge-router", "edge-router")["image"] == "ghcr.io/acme/ofc/edge-router:v2"
    )
    assert container(objs, "edge-auth", "edge-auth")["image"] == "ghcr.io/acme/ofc/edge-auth:v2"
    builder = container(objs, "of-builder", "builder")
    assert builder["image"] == "ghcr.io/acme/ofc/builder:v2"
    assert env(builder)["OFC_BUILDER_BASE_IMAGE"] == "ghcr.io/acme/ofc/python3-base:bookworm"


def test_every_deployment_selects_its_own_pods_and_each_service_has_a_deployment() -> None:
    objs = objects(**{"registry.mode": "internal"})
    pods = {}
    for d in (o for o in objs if o["kind"] == "Deployment"):
        selector = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        pods[d["metadata"]["name"]] = labels
    for s in (o for o in objs if o["kind"] == "Service"):
        assert any(s["spec"]["selector"].items() <= labels.items() for labels in pods.values()), s


# -- network policies -----------------------------------------------------------------------------
def _ns(name: str) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def allowed(policy: dict[str, Any], namespace: str, pod_labels: dict[str, str]) -> bool:
    """Whether ``policy`` lets a pod from ``namespace`` with ``pod_labels`` in (any port)."""

    def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        assert set(selector) <= {"matchLabels"}, "only matchLabels is understood here"
        return selector.get("matchLabels", {}).items() <= labels.items()

    ns_labels = {"kubernetes.io/metadata.name": namespace}
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            ns_ok = (
                matches(peer["namespaceSelector"], ns_labels)
                if "namespaceSelector" in peer
                else (namespace == policy["metadata"]["namespace"])
            )
            pod_ok = matches(peer.get("podSelector", {}), pod_labels)
            if ns_ok and pod_ok:
                return True
    return False


USER_FN = {"faas_function": "alice-hello", "com.openfaas.cloud.git-owner": "alice"}
PLATFORM_FN = {"faas_function": "buildshiprun", "role": "openfaas-system", "openfaas-cloud": "1"}


def test_user_functions_cannot_reach_anything_in_the_core_namespace() -> None:
    objs = objects()
    policy = find(objs, "NetworkPolicy", "ofc-core-ingress")
    assert policy["metadata"]["namespace"] == "openfaas"
    # Every pod of the core namespace: the gateway, the builder, the router, edge-auth.
    assert policy["spec"]["podSelector"] == {}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert not allowed(policy, "openfaas-fn", USER_FN)
    assert allowed(policy, "openfaas-fn", PLATFORM_FN)  # buildshiprun -> builder, gateway
    assert allowed(policy, "openfaas", {"app": "gateway"})
    assert allowed(policy, "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    assert not allowed(policy, "default", {})


def test_ingress_controller_may_reach_only_the_routers_port() -> None:
    policy = find(objects(), "NetworkPolicy", "ofc-core-ingress")
    rule = next(
        r
        for r in policy["spec"]["ingress"]
        if r["from"] == [{"namespaceSelector": _ns("ingress-nginx")}]
    )
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]


def test_functions_accept_calls_only_from_the_core_namespace() -> None:
    policy = find(objects(), "NetworkPolicy", "ofc-functions-ingress")
    assert policy["metadata"]["namespace"] == "openfaas-fn"
    assert policy["spec"]["podSelector"] == {}  # platform functions and users' alike
    assert allowed(policy, "openfaas", {"app": "gateway"})
    assert not allowed(policy, "openfaas-fn", USER_FN)  # a user's function -> buildshiprun
    assert not allowed(policy, "openfaas-fn", PLATFORM_FN)


def test_network_policies_can_be_left_out() -> None:
    objs = objects(**{"networkPolicies.enabled": "false"})
    assert not [o for o in objs if o["kind"] == "NetworkPolicy"]


def test_namespaces_follow_the_values() -> None:
    objs = objects(**{"namespaces.core": "ofc", "namespaces.functions": "ofc-fn"})
    assert {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"} == {"ofc", "ofc-fn"}
    policy = find(objs, "NetworkPolicy", "ofc-functions-ingress")
    assert policy["metadata"]["namespace"] == "ofc-fn"
    assert policy["spec"]["ingress"] == [{"from": [{"namespaceSelector": _ns("ofc")}]}]


# -- values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ([], "domain is required"),
        (["domain=https://x.com"], "expected a DNS name"),
        (["domain=10.0.0.1"], "expected a DNS name"),
        (["domain=x.com"], "registry.address is required"),
        (
            ["domain=x.com", "registry.mode=internal", "router.replica=2"],
            "unknown setting 'router.replica'",
        ),
        (["domain=x.com", "registry.mode=cloud"], "registry.mode='cloud'"),
        (
            ["domain=x.com", "registry.mode=internal", "builder.concurrency=0"],
            "builder.concurrency=0",
        ),
        (
            ["domain=x.com", "registry.mode=internal", "builder.timeout=soon"],
            "builder.timeout='soon'",
        ),
        (
            ["domain=x.com", "registry.mode=internal", "router.resources.limits.cpu=lots"],
            "not a quantity",
        ),
        (["domain=x.com", "registry.mode=internal", "router=3"], "router must be a map"),
        (["domain"], "expected key.path=value"),
        (["domain=[x"], "is not a YAML value"),
    ],
    ids=[
        "no-domain",
        "url-as-domain",
        "ip-as-domain",
        "external-without-address",
        "typo",
        "bad-mode",
        "zero-concurrency",
        "bad-duration",
        "bad-quantity",
        "scalar-for-map",
        "no-equals",
        "not-yaml",
    ],
)
def test_bad_values_are_refused_with_the_key_named(sets: list[str], message: str) -> None:
    with pytest.raises(ValuesError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_values(sets=sets)


def test_values_files_apply_in_order_then_sets(tmp_path: Path) -> None:
    first = tmp_path / "a.yaml"
    first.write_text(
        f"domain: {DOMAIN}\nregistry: {{mode: internal}}\nrouter: {{replicas: 3}}\n"
        "ingress: {annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 50m}}\n"
    )
    second = tmp_path / "b.yaml"
    second.write_text("router: {replicas: 5}\n")
    values = load_values([first, second], ["auth.replicas=2"])
    assert values["router"]["replicas"] == 5
    assert values["auth"]["replicas"] == 2
    assert values["router"]["resources"]["limits"]["memory"] == "256Mi"  # default kept
    ing = find([o for m in render(values) for o in m.objects], "Ingress", "ofc-edge")
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "50m"


# -- the command ----------------------------------------------------------------------------------
def run_ofc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ofc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


def test_ofc_render_writes_one_file_per_component_that_kubectl_can_apply(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out).mkdir()
    (out / "40-registry.yaml").write_text("stale from an internal-registry render\n")
    done = run_ofc(
        "render",
        "--set",
        f"domain={DOMAIN}",
        "--set",
        "registry.address=ghcr.io/a/b",
        "-o",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "00-namespaces.yaml",
        "10-edge-router.yaml",
        "20-edge-auth.yaml",
        "30-builder.yaml",
        "50-ingress.yaml",
        "60-network-policies.yaml",
    ]
    kinds = [d["kind"] for p in sorted(out.iterdir()) for d in yaml.safe_load_all(p.read_text())]
    assert kinds[:2] == ["Namespace", "Namespace"]  # applied first: everything else is in them
    assert "Ingress" in kinds and "NetworkPolicy" in kinds


def test_ofc_render_without_a_domain_exits_1_saying_what_to_set(tmp_path: Path) -> None:
    done = run_ofc("render", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "--set domain=" in done.stderr


def test_ofc_render_prints_to_stdout_without_output_dir(tmp_path: Path) -> None:
    done = run_ofc(
        "render", "--set", f"domain={DOMAIN}", "--set", "registry.mode=internal", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all(done.stdout))
    assert {
        "Namespace",
        "Deployment",
        "Service",
        "Ingress",
        "NetworkPolicy",
        "PersistentVolumeClaim",
    } <= {d["kind"] for d in docs}


def test_write_manifests_round_trips(tmp_path: Path) -> None:
    values = load_values(sets=[f"domain={DOMAIN}", "registry.mode=internal"])
    manifests = render(values)
    write_manifests(manifests, tmp_path)
    for m in manifests:
        assert list(yaml.safe_load_all((tmp_path / m.name).read_text())) == [
            dict(o) for o in m.objects
        ]
