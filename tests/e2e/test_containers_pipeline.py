"""git push to live with containers: ``ofc up --containers`` on a real Docker engine.

The builder's buildkit backend builds each pushed function with BuildKit and pushes it
to the registry; the runtime (``OFC_PROVIDER=hybrid``) runs it as a container with host
networking on a loopback port, while the platform's own functions stay processes. The
engine is the session's (tests/containers.py), named by OFC_DOCKER_HOST/OFC_REGISTRY.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.containers import Engine
from tests.e2e.test_git_remote_pipeline import HELLO, Remote, _functions, stack_yml
from tests.helpers import Cli, free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.containers]

LIVE_TIMEOUT = 240.0  # a first build in a fresh engine installs the template's packages


@pytest.fixture(scope="module")
def remote(
    tmp_path_factory: pytest.TempPathFactory, venv_dir: Path, engine: Engine
) -> Iterator[Remote]:
    cli = Cli(
        tmp_path_factory.mktemp("containers-state"),
        free_port(),
        venv_dir,
        OFC_DOCKER_HOST=engine.docker_host,
        OFC_REGISTRY=engine.registry,
        OFC_DOCKER_CLI=engine.docker_cli,
    )
    try:
        cli.ok("up", "--detach", "--containers", timeout=600)
        yield Remote(cli, tmp_path_factory.mktemp("containers-work"))
    finally:
        cli.run("down")
        runtime_id = (cli.state_dir / "runtime-id").read_text().strip()
        leftovers = engine.containers([f"label=com.openfaas-cloud.runtime={runtime_id}"])
        if leftovers:
            engine.docker("rm", "-f", *leftovers, check=False)
        assert leftovers == [], "ofc down left containers running"


def _containers(engine: Engine, function: str) -> list[dict[str, object]]:
    """Running (or starting) containers of ``function``; one removed meanwhile is left out."""
    found = []
    for container_id in engine.containers([f"label=com.openfaas.function={function}"]):
        result = engine.docker("inspect", container_id, check=False)
        if result.returncode == 0:
            found.append(json.loads(result.stdout)[0])
    return found


def _via_router(remote: Remote, user: str, path: str) -> requests.Response:
    port = remote.cli.env["OFC_ROUTER_PORT"]
    return requests.get(
        f"http://127.0.0.1:{port}/{path}", headers={"Host": f"{user}.localhost:{port}"}, timeout=10
    )


def test_a_push_is_built_with_buildkit_and_served_by_a_container(
    remote: Remote, engine: Engine
) -> None:
    work = remote.repo(
        "ivan", "fns", {"stack.yml": stack_yml("hello"), "hello/handler.py": HELLO % "v1"}
    )
    sha = remote.push("ivan", work, "ivan", "fns")
    remote.answers("ivan-hello", {"hi": "v1"}, timeout=LIVE_TIMEOUT)
    assert _via_router(remote, "ivan", "hello").json() == {"hi": "v1"}

    (container,) = _containers(engine, "ivan-hello")
    deployed = next(f for f in _functions(remote.cli) if f["name"] == "ivan-hello")
    assert deployed["image"] == f"{engine.registry}/ivan/fns-hello:main-{sha[:12]}"
    # The container runs that image, pinned by its ID.
    image_id = json.loads(engine.docker("image", "inspect", str(deployed["image"])).stdout)[0]["Id"]
    assert container["Image"] == image_id
    assert container["HostConfig"]["NetworkMode"] == "host"  # type: ignore[index]
    assert container["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
    # Pushed to the registry under the commit, as the original tags images.
    tags = requests.get(f"http://{engine.registry}/v2/ivan/fns-hello/tags/list", timeout=10).json()
    assert f"main-{sha[:12]}" in tags["tags"]
    # The platform's own functions are not containers.
    assert _containers(engine, "git-tar") == []


def test_a_code_change_rebuilds_and_replaces_the_container(remote: Remote, engine: Engine) -> None:
    files = {"stack.yml": stack_yml("app"), "app/handler.py": HELLO % "first"}
    work = remote.repo("ivan", "change", files)
    remote.push("ivan", work, "ivan", "change")
    remote.answers("ivan-app", {"hi": "first"}, timeout=LIVE_TIMEOUT)
    (before,) = _containers(engine, "ivan-app")

    remote.commit("ivan", work, {"app/handler.py": HELLO % "second"})
    remote.push("ivan", work, "ivan", "change")
    remote.answers("ivan-app", {"hi": "second"}, timeout=LIVE_TIMEOUT)

    wait_until(
        lambda: [c["Id"] for c in _containers(engine, "ivan-app")] not in ([], [before["Id"]]),
        60,
        "the new version's container never replaced the old one",
    )
    assert before["Id"] not in [c["Id"] for c in _containers(engine, "ivan-app")]


def test_a_failing_build_keeps_the_running_container(remote: Remote, engine: Engine) -> None:
    work = remote.repo(
        "ivan", "deps", {"stack.yml": stack_yml("kept"), "kept/handler.py": HELLO % "v1"}
    )
    remote.push("ivan", work, "ivan", "deps")
    remote.answers("ivan-kept", {"hi": "v1"}, timeout=LIVE_TIMEOUT)
    (before,) = _containers(engine, "ivan-kept")

    remote.commit(
        "ivan", work,
        {"kept/handler.py": HELLO % "v2", "kept/requirements.txt": "this-package-does-not-exist-ofc==0.0.1\n"},
    )  # fmt: skip
    sha = remote.push("ivan", work, "ivan", "deps")
    wait_until(
        lambda: sha[:12] in remote.logs("buildshiprun")
        and "failure" in remote.logs("buildshiprun"),
        LIVE_TIMEOUT,
        lambda: f"buildshiprun never reported the failed build:\n{remote.logs('buildshiprun')}",
    )
    assert remote.call("ivan-kept").json() == {"hi": "v1"}
    assert [c["Id"] for c in _containers(engine, "ivan-kept")] == [before["Id"]]


def test_a_push_that_removes_the_function_removes_its_container(
    remote: Remote, engine: Engine
) -> None:
    files = {
        "stack.yml": stack_yml("gone", "stay"),
        "gone/handler.py": HELLO % "gone",
        "stay/handler.py": HELLO % "stay",
    }
    work = remote.repo("ivan", "trim", files)
    remote.push("ivan", work, "ivan", "trim")
    remote.answers("ivan-gone", {"hi": "gone"}, timeout=LIVE_TIMEOUT)
    remote.answers("ivan-stay", {"hi": "stay"}, timeout=LIVE_TIMEOUT)

    remote.commit("ivan", work, {"stack.yml": stack_yml("stay"), "gone/handler.py": None})
    remote.push("ivan", work, "ivan", "trim")
    wait_until(
        lambda: _containers(engine, "ivan-gone") == [], LIVE_TIMEOUT, "ivan-gone's container stayed"
    )
    assert remote.call("ivan-gone").status_code == 404
    assert remote.call("ivan-stay").json() == {"hi": "stay"}
