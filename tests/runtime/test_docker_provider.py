"""The Docker provider in a real ``python -m runtime`` (``OFC_PROVIDER=docker``) on a real engine.

One image is built per module from the real template (template/python3-http with
:data:`PROBE_HANDLER` over function/), pushed to the engine's registry under a unique
repository and removed locally, so the first deploy has to pull it. Each test starts
its own gateway; what it checks is what a user sees (answers of
``/function/<name>``, the function's log) and what is left on the engine (containers
carrying this gateway's ``com.openfaas-cloud.runtime`` label).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from sdk.gateway import GatewayError
from sdk.openfaas import FunctionDeployment, Resources
from tests.conftest import TEMPLATE, RunningGateway
from tests.containers import Engine
from tests.helpers import child_pids, wait_until
from tests.runtime.test_lifecycle import invoke_until_200, load, log_texts

pytestmark = [pytest.mark.containers, pytest.mark.slow]

# Answers with its VERSION (env); /env: its environment; /secret/<name>: that secret;
# /write: whether it can write in its home folder and in /tmp; /crash: exits.
# CRASH_AT_START=1 makes it fail at import, as a broken new version would.
PROBE_HANDLER = """
import os

print("handler loaded as " + os.environ.get("HOSTNAME", "?"), flush=True)
if os.environ.get("CRASH_AT_START"):
    raise SystemExit("crashing at start on purpose")


def handle(event, context):
    if event.path == "/env":
        return {"statusCode": 200, "body": dict(os.environ)}
    if event.path.startswith("/secret/"):
        name = event.path.rsplit("/", 1)[1]
        with open(os.path.join("/var/openfaas/secrets", name)) as fh:
            return fh.read()
    if event.path == "/write":
        results = {}
        for target in ("/home/app/probe", "/tmp/probe"):
            try:
                with open(target, "w") as fh:
                    fh.write("x")
                results[target] = "written"
            except OSError as exc:
                results[target] = exc.strerror
        return {"statusCode": 200, "body": results}
    if event.path == "/crash":
        os._exit(3)
    return os.environ.get("VERSION", "v1")
"""

RUNTIME_LABEL = "com.openfaas-cloud.runtime"
GatewayFactory = Callable[..., RunningGateway]


# -- fixtures ----------------------------------------------------------------------------------------
def _delete_from_registry(engine: Engine, repository: str, tag: str) -> None:
    """Best effort: the registry deletes manifests (storage.delete.enabled)."""
    base = f"http://{engine.registry}/v2/{repository}/manifests"
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    try:
        found = requests.head(f"{base}/{tag}", headers=accept, timeout=10)
        digest = found.headers.get("Docker-Content-Digest")
        if digest:
            requests.delete(f"{base}/{digest}", timeout=10)
    except requests.RequestException:
        pass


@pytest.fixture(scope="module")
def image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The probe function's image in the registry, absent from the engine's local images."""
    repository = f"ofc-test/probe-{uuid.uuid4().hex[:10]}"
    ref = f"{engine.registry}/{repository}:v1"
    context = tmp_path_factory.mktemp("probe") / "context"
    shutil.copytree(TEMPLATE, context)
    (context / "function" / "handler.py").write_text(PROBE_HANDLER)
    engine.docker(
        "build", "--network", "host",
        "--secret", "id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt",
        "--build-arg", "TEST_ENABLED=false", "--build-arg", f"BASE_IMAGE={engine.base_image}",
        "-t", ref, str(context),
    )  # fmt: skip
    latest = f"{engine.registry}/{repository}:latest"
    engine.docker("tag", ref, latest)
    for tagged in (ref, latest):
        engine.docker("push", tagged)
        engine.docker("rmi", tagged)
    yield ref
    engine.docker("rmi", "-f", ref, latest, check=False)
    for tag in ("v1", "latest"):
        _delete_from_registry(engine, repository, tag)


@pytest.fixture
def docker_gateway(
    make_gateway: GatewayFactory, engine: Engine
) -> Iterator[Callable[..., RunningGateway]]:
    """Factory: a gateway with the Docker provider; its containers are removed afterwards."""
    started: list[RunningGateway] = []

    def make(**env: str) -> RunningGateway:
        gateway = make_gateway(OFC_PROVIDER="docker", OFC_DOCKER_HOST=engine.docker_host, **env)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()  # make_gateway's teardown would too; the check below needs it first
        leftovers = containers_of(engine, gateway)
        if leftovers:
            engine.docker("rm", "-f", *leftovers, check=False)
        assert leftovers == [], f"{gateway.url} left containers behind: {leftovers}"


@pytest.fixture
def gateway(docker_gateway: Callable[..., RunningGateway]) -> RunningGateway:
    return docker_gateway()


# -- helpers -----------------------------------------------------------------------------------------
def runtime_id(gateway: RunningGateway) -> str:
    return (gateway.state_dir / "runtime-id").read_text().strip()


def containers_of(engine: Engine, gateway: RunningGateway, function: str = "") -> list[str]:
    """IDs of containers (running or not) of ``gateway`` (and of ``function``, when given)."""
    filters = [f"label={RUNTIME_LABEL}={runtime_id(gateway)}"]
    if function:
        filters.append(f"label=com.openfaas.function={function}")
    return engine.containers(filters)


def inspect(engine: Engine, container_id: str) -> dict:
    return json.loads(engine.docker("inspect", container_id).stdout)[0]


def deploy(
    gateway: RunningGateway, name: str, image: str, *, wait: bool = True, **spec: object
) -> None:
    gateway.client.deploy(FunctionDeployment(service=name, image=image, **spec))  # type: ignore[arg-type]
    if wait:
        gateway.wait_ready(name, int(spec.get("labels", {}).get("com.openfaas.scale.min", 1)))  # type: ignore[attr-defined]


def wait_for_log(gateway: RunningGateway, name: str, text: str, timeout: float = 60) -> list[str]:
    return wait_until(
        lambda: [line for line in log_texts(gateway, name) if text in line],
        timeout,
        lambda: f"no log line of {name} has {text!r}: {log_texts(gateway, name)[-15:]}",
    )


# -- deploy and invoke -------------------------------------------------------------------------------
def test_deploy_pulls_the_absent_image_and_serves_through_the_gateway(
    gateway: RunningGateway, engine: Engine, image: str
) -> None:
    engine.docker("rmi", image, check=False)  # pulled by an earlier test, if any
    assert not engine.image_exists(image)

    deploy(gateway, "probe", image)

    response = gateway.client.invoke("probe")
    assert (response.status_code, response.text) == (200, "v1")
    texts = log_texts(gateway, "probe")
    assert f"[ofc] pulling {image}" in texts
    # The container's stdout and stderr, in the function's log under the replica's name.
    assert "handler loaded as probe-1-0" in texts
    assert any(text.startswith("INFO index: listening on 127.0.0.1:") for text in texts)
    assert engine.image_exists(image)
    (container,) = containers_of(engine, gateway, "probe")
    assert inspect(engine, container)["State"]["Running"]


def test_function_environment_has_deployment_vars_under_platform_settings(
    gateway: RunningGateway, image: str
) -> None:
    deploy(
        gateway,
        "env",
        image,
        env_vars={"GREETING": "hello", "port": "1", "bind_address": "0.0.0.0"},
    )

    environ = gateway.client.invoke("env", path="env").json()

    assert environ["GREETING"] == "hello"
    assert environ["bind_address"] == "127.0.0.1"
    assert environ["HOSTNAME"] == "env-1-0"
    assert environ["port"] != "1"


def test_container_carries_deployment_labels_and_the_runtimes_own(
    gateway: RunningGateway, engine: Engine, image: str
) -> None:
    deploy(gateway, "labelled", image, labels={"team": "blue", RUNTIME_LABEL: "forged"})

    (container,) = containers_of(engine, gateway, "labelled")
    labels = inspect(engine, container)["Config"]["Labels"]

    assert labels["team"] == "blue"
    assert labels[RUNTIME_LABEL] == runtime_id(gateway)
    assert (labels["com.openfaas.function"], labels["com.openfaas-cloud.replica"]) == (
        "labelled",
        "labelled-1-0",
    )


def test_secret_is_readable_by_the_function_at_var_openfaas_secrets(
    gateway: RunningGateway, image: str
) -> None:
    gateway.client.create_secret("api-key", b"s3cr3t value")

    deploy(gateway, "secretive", image, secrets=["api-key"])

    response = gateway.client.invoke("secretive", path="secret/api-key")
    assert (response.status_code, response.text) == (200, "s3cr3t value")


@pytest.mark.parametrize(
    ("read_only", "home"),
    [(True, "Read-only file system"), (False, "written")],
    ids=["read-only", "writable"],
)
def test_read_only_root_filesystem_refuses_writes_outside_tmp(
    gateway: RunningGateway, image: str, read_only: bool, home: str
) -> None:
    deploy(gateway, "writer", image, read_only_root_filesystem=read_only)

    results = gateway.client.invoke("writer", path="write").json()

    assert results == {"/home/app/probe": home, "/tmp/probe": "written"}


def test_limits_become_the_containers_memory_and_cpu_limits(
    gateway: RunningGateway, engine: Engine, image: str
) -> None:
    deploy(gateway, "limited", image, limits=Resources(memory="128Mi", cpu="500m"))

    (container,) = containers_of(engine, gateway, "limited")
    host = inspect(engine, container)["HostConfig"]

    assert (host["Memory"], host["NanoCpus"]) == (128 * 2**20, 500_000_000)
    assert gateway.client.invoke("limited").status_code == 200


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"image": "Alice/Probe:1"}, "must be lower-case"),
        ({"image": "127.0.0.1:5000/probe:"}, "invalid tag ''"),
        ({"limits": Resources(memory="lots")}, "limits: memory 'lots' is not a quantity"),
        ({"limits": Resources(cpu="1000")}, "limits: cpu '1000' is more than the"),
        ({"secrets": ["not-created"]}, "secret 'not-created' not found"),
    ],
    ids=["upper-case-image", "empty-tag", "bad-memory", "more-cpu-than-the-engine", "no-secret"],
)
def test_invalid_deployment_is_refused_with_400_and_starts_nothing(
    gateway: RunningGateway, engine: Engine, image: str, spec: dict, message: str
) -> None:
    with pytest.raises(GatewayError) as refused:
        deploy(gateway, "invalid", **{"image": image, **spec}, wait=False)

    assert refused.value.status == 400 and message in refused.value.message
    assert gateway.client.get_function("invalid") is None
    assert containers_of(engine, gateway) == []


# -- update ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("replicas", [1, 2], ids=["one-replica", "two-replicas"])
def test_update_under_load_switches_versions_without_a_failed_request(
    gateway: RunningGateway, engine: Engine, image: str, replicas: int
) -> None:
    labels = {"com.openfaas.scale.min": str(replicas)}
    deploy(gateway, "versioned", image, env_vars={"VERSION": "v1"}, labels=labels)
    old = set(containers_of(engine, gateway, "versioned"))

    with load(f"{gateway.url}/function/versioned", limit=60) as results:
        wait_until(lambda: all(results), 10, "the load got no answer")
        deploy(gateway, "versioned", image, env_vars={"VERSION": "v2"}, labels=labels, wait=False)
        wait_until(
            lambda: all([body for _, body in answers].count("v2") >= 5 for answers in results),
            60,
            lambda: f"not every thread saw v2: {[answers[-1:] for answers in results]}",
        )

    answers = [a for thread in results for a in thread]
    print(f"update under load ({replicas} replica(s)): {len(answers)} requests, "
          f"{sum(1 for a in answers if a[0] != 200)} failed")  # fmt: skip
    assert [a for a in answers if a[0] != 200] == []
    assert {body for _, body in answers} == {"v1", "v2"}
    for thread in results:
        seen = [body for _, body in thread]
        assert "v1" not in seen[seen.index("v2") :], "v1 answered again after v2 had"
    wait_until(
        lambda: not old & set(containers_of(engine, gateway, "versioned")),
        30,
        "the old version's containers are still there",
    )
    assert len(containers_of(engine, gateway, "versioned")) == replicas


@pytest.mark.parametrize(
    ("broken", "explanation"),
    [
        ({"env_vars": {"CRASH_AT_START": "1"}}, "new version did not start: exited with code 1"),
        ({"image": "{registry}/ofc-test/missing-{uid}:v1"}, "failed: pulling image"),
    ],
    ids=["crashes-at-start", "cannot-be-pulled"],
)
def test_update_to_a_broken_version_keeps_the_old_one_serving_and_logs_why(
    gateway: RunningGateway, engine: Engine, image: str, broken: dict, explanation: str
) -> None:
    deploy(gateway, "stable", image)
    (old,) = containers_of(engine, gateway, "stable")
    spec = {"image": image, **broken}
    spec["image"] = spec["image"].format(registry=engine.registry, uid=uuid.uuid4().hex[:8])

    with load(f"{gateway.url}/function/stable") as results:
        deploy(gateway, "stable", **spec, wait=False)
        failure = wait_for_log(gateway, "stable", explanation)
        count = sum(map(len, results))
        wait_until(lambda: sum(map(len, results)) > count + 20, 10, "the load stalled")

    assert failure[0].startswith("[ofc] failed:")
    assert failure[0].endswith("; the previous version keeps serving")
    assert {answer for answers in results for answer in answers} == {(200, "v1")}
    wait_until(
        lambda: containers_of(engine, gateway, "stable") == [old],
        20,
        lambda: f"containers: {containers_of(engine, gateway, 'stable')}, expected only {old}",
    )


def test_first_deploy_of_an_image_that_cannot_be_pulled_logs_why_and_serves_nothing(
    gateway: RunningGateway, engine: Engine
) -> None:
    missing = f"{engine.registry}/ofc-test/missing-{uuid.uuid4().hex[:8]}:v1"

    deploy(gateway, "unpullable", missing, wait=False)

    (line,) = wait_for_log(gateway, "unpullable", "[ofc] failed:")
    assert f"pulling image {missing!r} failed" in line and "not found" in line
    assert gateway.client.get_function("unpullable")["availableReplicas"] == 0
    assert gateway.client.invoke("unpullable").status_code == 503
    assert containers_of(engine, gateway) == []


@pytest.mark.parametrize(("tag", "pulls"), [("v1", 1), ("latest", 2)], ids=["fixed-tag", "latest"])
def test_update_pulls_the_image_again_only_when_its_tag_is_latest(
    gateway: RunningGateway, engine: Engine, image: str, tag: str, pulls: int
) -> None:
    ref = image.rsplit(":", 1)[0] + ":" + tag
    engine.docker("rmi", ref, check=False)  # the first deploy pulls it in either case
    deploy(gateway, "puller", ref, env_vars={"VERSION": "v1"})

    deploy(gateway, "puller", ref, env_vars={"VERSION": "v2"}, wait=False)

    wait_until(lambda: gateway.client.invoke("puller").text == "v2", 30, "v2 never served")
    pulled = [t for t in log_texts(gateway, "puller") if t == f"[ofc] pulling {ref}"]
    assert len(pulled) == pulls


def test_with_pull_never_an_image_absent_from_the_engine_fails_the_deploy_saying_so(
    docker_gateway: Callable[..., RunningGateway], engine: Engine
) -> None:
    gateway = docker_gateway(OFC_DOCKER_PULL="never")
    absent = f"{engine.registry}/ofc-test/absent-{uuid.uuid4().hex[:8]}:v1"

    deploy(gateway, "local-only", absent, wait=False)

    (line,) = wait_for_log(gateway, "local-only", "[ofc] failed:")
    assert line == f"[ofc] failed: image {absent!r} is not on the engine (OFC_DOCKER_PULL=never)"
    assert not any("[ofc] pulling" in text for text in log_texts(gateway, "local-only"))


# -- replicas ----------------------------------------------------------------------------------------
def test_scale_to_two_runs_two_containers_taking_turns_and_back_to_one(
    gateway: RunningGateway, engine: Engine, image: str
) -> None:
    deploy(gateway, "scaled", image)

    gateway.client.scale("scaled", 2)
    gateway.wait_ready("scaled", 2)
    hosts = {gateway.client.invoke("scaled", path="env").json()["HOSTNAME"] for _ in range(4)}
    assert hosts == {"scaled-1-0", "scaled-1-1"}
    assert len(containers_of(engine, gateway, "scaled")) == 2

    gateway.client.scale("scaled", 1)
    wait_until(
        lambda: len(containers_of(engine, gateway, "scaled")) == 1,
        20,
        lambda: f"containers: {containers_of(engine, gateway, 'scaled')}",
    )
    assert gateway.client.get_function("scaled")["availableReplicas"] == 1
    assert gateway.client.invoke("scaled").status_code == 200


def test_crashed_container_is_replaced_after_back_off(
    gateway: RunningGateway, engine: Engine, image: str
) -> None:
    deploy(gateway, "crashy", image)
    (before,) = containers_of(engine, gateway, "crashy")

    gateway.client.invoke("crashy", path="crash")
    answers = invoke_until_200(gateway, "crashy", 30)

    # A GET reaching the replica while its process exits is accepted by the kernel and
    # then reset: the gateway sends it on instead of answering 502; none finds a replica.
    statuses = [status for status, _ in answers[:-1]]
    assert set(statuses) <= {503}, answers
    assert "[ofc] replica stopped (exit code 3); restarting in 0.5 s" in log_texts(
        gateway, "crashy"
    )
    (after,) = containers_of(engine, gateway, "crashy")
    assert after != before


def test_remove_leaves_no_container_behind(
    gateway: RunningGateway, engine: Engine, image: str
) -> None:
    deploy(gateway, "doomed", image, labels={"com.openfaas.scale.min": "2"})
    assert len(containers_of(engine, gateway, "doomed")) == 2

    gateway.client.remove("doomed")

    wait_until(
        lambda: containers_of(engine, gateway) == [],
        20,
        lambda: f"left behind: {containers_of(engine, gateway)}",
    )
    assert gateway.client.invoke("doomed").status_code == 404


# -- the gateway going away --------------------------------------------------------------------------
def test_gateway_sigkill_then_restart_serves_again_with_exactly_the_desired_containers(
    gateway: RunningGateway, engine: Engine, image: str
) -> None:
    deploy(gateway, "survivor", image, labels={"com.openfaas.scale.min": "2"})
    before = set(containers_of(engine, gateway))
    assert len(before) == 2

    gateway.kill()
    # Containers do not die with the runtime: what the next start has to clear up.
    assert set(containers_of(engine, gateway)) == before

    gateway.start()
    gateway.wait_ready("survivor", 2, timeout=60)

    assert gateway.client.invoke("survivor").text == "v1"
    after = set(containers_of(engine, gateway))
    assert len(after) == 2 and not after & before


def test_gateway_sigterm_stops_and_removes_its_containers(
    gateway: RunningGateway, engine: Engine, image: str
) -> None:
    deploy(gateway, "stopped", image, labels={"com.openfaas.scale.min": "2"})
    assert len(containers_of(engine, gateway)) == 2
    started = time.monotonic()

    gateway.stop()

    assert containers_of(engine, gateway) == []
    assert gateway.proc is not None and gateway.proc.returncode == 0
    assert time.monotonic() - started < 15


# -- hybrid: local artifacts as processes, registry images as containers ---------------------------
def test_hybrid_runs_stored_artifacts_as_processes_and_registry_images_as_containers(
    make_gateway: GatewayFactory, engine: Engine, image: str
) -> None:
    gateway = make_gateway(OFC_PROVIDER="hybrid", OFC_DOCKER_HOST=engine.docker_host)
    gateway.store_function("local:v1", 'def handle(event, context):\n    return "from a process"\n')
    try:
        deploy(gateway, "local", "local:v1")
        deploy(gateway, "boxed", image)

        assert gateway.client.invoke("local").text == "from a process"
        assert gateway.client.invoke("boxed").text == "v1"
        assert len(containers_of(engine, gateway, "boxed")) == 1
        assert containers_of(engine, gateway, "local") == []
        # The process replica is the gateway's child; the container is not.
        assert gateway.proc is not None
        children = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in child_pids(gateway.proc.pid)]
        assert sum(b"index.py" in cmdline for cmdline in children) == 1
    finally:
        gateway.stop()
        leftovers = containers_of(engine, gateway)
        if leftovers:
            engine.docker("rm", "-f", *leftovers, check=False)
    assert leftovers == []
