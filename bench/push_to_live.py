"""Push to live through the built-in git remote, beside the bare minimum for the same work.

The platform runs as ``ofc up`` starts it (its own state directory and ports; the shared
virtualenv cache, already warm). Each round is a new user pushing ``examples/`` (a first
deploy of ``<user>-hello``), then a one-line change to its handler (a rebuild, tests
included, and a rolling update).

* push-to-live: from ``git push`` until the function answers 200 at its URL;
* redeploy: from ``git push`` until the gateway serves the new commit and it answers;
* baseline, the bare minimum of the same work, measured between the rounds: a shallow
  clone of the same repository over HTTP, the build folder laid out (template plus
  handler), and the handler started with the same cached virtualenv until it answers;
* many users at once: N new users (1, 2, 5, 10) each push ``examples/`` at the same
  moment; the time until every one of the N functions answers, beside one user alone;
* with containers (``ofc up --containers``, when an engine is named as for the container
  tests): the same first deploy and one-line change, built with BuildKit, pushed to the
  registry and run as containers, beside a bare ``docker build`` + ``docker push`` +
  ``docker run`` of the same code until it answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.harness import PROCESSES, BenchError, entry, free_port, log, median, skipped
from ofc.gitclient import git, git_env

REPO = Path(__file__).resolve().parent.parent
OFC = str(REPO / "bin" / "ofc")
ROUNDS = 3
AT_ONCE = (1, 2, 5, 10)
TIMEOUT = 120.0
POLL = 0.01
GOAL_FIRST = 2.0
GOAL_REDEPLOY = 1.5
GOAL_CONTAINERS = 8.0  # the original took 5 to 7 s per small function with a warm cache
CONTAINER_ENTRIES = ("push_to_live_containers_first_deploy", "push_to_live_containers_one_line_change")
CONTAINER_BASELINE = "bare docker build + docker push + docker run of the same code, first answer"


class Platform:
    def __init__(self, root: Path, venv_dir: Path, **extra_env: str) -> None:
        self.state = root / "platform"
        self.gateway_port = free_port()
        self.git_port = free_port()
        self.env = {
            **os.environ,
            "OFC_STATE_DIR": str(self.state),
            "OFC_VENV_DIR": str(venv_dir),
            "OFC_GATEWAY_PORT": str(self.gateway_port),
            "OFC_BUILDER_PORT": str(free_port()),
            "OFC_GIT_PORT": str(self.git_port),
            "OFC_AUTH_PORT": str(free_port()),
            "OFC_ROUTER_PORT": str(free_port()),
            **extra_env,
        }
        self.env.pop("OPENFAAS_URL", None)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def ofc(self, *args: str) -> str:
        result = subprocess.run([OFC, *args], env=self.env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise BenchError(f"ofc {' '.join(args)}: {result.stderr.strip()[-500:]}")
        return result.stdout

    def credentials(self) -> tuple[str, str]:
        secrets = self.state / "secrets" / "gateway"
        return (secrets / "basic-auth-user").read_text().strip(), (secrets / "basic-auth-password").read_text().strip()

    def serving_sha(self, name: str) -> str:
        response = requests.get(f"{self.gateway}/system/function/{name}", auth=self.credentials(), timeout=5)
        if response.status_code != 200 or response.json().get("availableReplicas", 0) < 1:
            return ""
        return (response.json().get("labels") or {}).get("com.openfaas.cloud.git-sha", "")


def _until(check: Any, what: str) -> float:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            if check():
                return time.perf_counter()
        except requests.RequestException:
            pass
        time.sleep(POLL)
    raise BenchError(f"{what} not within {TIMEOUT:g} s")


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line + "\n")


def _prepare_repo(platform: Platform, scratch: Path, user: str) -> tuple[Path, dict[str, str], str]:
    """A new user with ``examples/`` committed, ready to push: (work tree, git env, remote)."""
    token = platform.ofc("user", "add", user).strip().splitlines()[-1]
    home = scratch / f"home-{user}"
    home.mkdir(parents=True)
    env = git_env(home, user, token)
    work = scratch / f"repo-{user}"
    shutil.copytree(REPO / "examples", work)
    # Code no earlier round built: a container build cache must not serve it whole.
    _append(work / "hello" / "handler.py", f"# {user} {time.time_ns()}")
    git(work, env, "init", "-q", "-b", "main")
    git(work, env, "add", "-A")
    git(work, env, "commit", "-q", "-m", "hello")
    return work, env, f"http://127.0.0.1:{platform.git_port}/git/{user}/hello-world.git"


def _push_round(platform: Platform, scratch: Path, user: str) -> dict[str, Any]:
    work, env, remote = _prepare_repo(platform, scratch, user)
    url = f"{platform.gateway}/function/{user}-hello"

    t0 = time.perf_counter()
    git(work, env, "push", "-q", remote, "main")
    first = _until(lambda: requests.get(url, timeout=5).status_code == 200, f"{url} answering") - t0

    _append(work / "hello" / "handler.py", f"# a one-line change {time.time_ns()}")
    git(work, env, "commit", "-q", "-am", "one line")
    sha = git(work, env, "rev-parse", "HEAD").strip()
    t1 = time.perf_counter()
    git(work, env, "push", "-q", remote, "main")
    _until(lambda: platform.serving_sha(f"{user}-hello") == sha, f"{user}-hello serving {sha[:12]}")
    redeploy = _until(lambda: requests.get(url, timeout=5).status_code == 200, url) - t1
    return {"user": user, "first_s": round(first, 4), "redeploy_s": round(redeploy, 4), "remote": remote, "env": env}


def _at_once_round(platform: Platform, scratch: Path, users: list[str]) -> float:
    """Every user pushes at the same moment; seconds until all their functions answer."""
    repos = [_prepare_repo(platform, scratch, user) for user in users]

    def push_and_wait(i: int) -> float:
        work, env, remote = repos[i]
        git(work, env, "push", "-q", remote, "main")
        url = f"{platform.gateway}/function/{users[i]}-hello"
        return _until(lambda: requests.get(url, timeout=5).status_code == 200, f"{url} answering")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        done = list(pool.map(push_and_wait, range(len(users))))
    return max(done) - t0


def _bare_round(platform: Platform, scratch: Path, pushed: dict[str, Any], python: Path, n: int) -> float:
    """Clone, lay out the build folder, start the handler with the cached venv, first answer."""
    dest = scratch / f"bare-{n}"
    port = free_port()
    t0 = time.perf_counter()
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", pushed["remote"], str(dest / "src")],
        env=pushed["env"], check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    build = dest / "build"
    shutil.copytree(REPO / "template" / "python3-http", build)
    shutil.copytree(dest / "src" / "hello", build / "function", dirs_exist_ok=True)
    env = {"PATH": f"{python.parent}:/usr/bin:/bin", "HOME": str(dest), "port": str(port),
           "bind_address": "127.0.0.1", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    proc = PROCESSES.start([str(python), "index.py"], cwd=build, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        return _until(
            lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200, "bare start"
        ) - t0
    finally:
        PROCESSES.stop(proc)


def _cached_python(venv_dir: Path) -> Path:
    for cand in sorted(venv_dir.glob("*/bin/python")):
        if subprocess.run([str(cand), "-c", "import flask, waitress"], capture_output=True).returncode == 0:
            return cand
    raise BenchError(f"no cached venv with flask and waitress under {venv_dir}")


def run(venv_dir: Path) -> list[dict[str, Any]]:
    scratch = Path(tempfile.mkdtemp(prefix="ofc-bench-push-"))
    platform = Platform(scratch, venv_dir)
    try:
        t = time.monotonic()
        platform.ofc("up", "--detach")
        log(f"push_to_live: platform up in {time.monotonic() - t:.1f} s")
        python = _cached_python(venv_dir)
        _push_round(platform, scratch, "warmup")  # fills the builder's pytest venv and caches
        pushes, bare = [], []
        for i in range(ROUNDS):
            pushed = _push_round(platform, scratch, f"bench{i + 1}")
            pushes.append(pushed)
            bare.append(round(_bare_round(platform, scratch, pushed, python, i), 4))
            log(f"push round {i + 1}: push-to-live {pushed['first_s']:.2f} s, redeploy "
                f"{pushed['redeploy_s']:.2f} s, bare minimum {bare[-1]:.2f} s")  # fmt: skip
        at_once: dict[int, float] = {}
        for n in AT_ONCE:
            at_once[n] = round(_at_once_round(platform, scratch, [f"many{n}u{i}" for i in range(n)]), 4)
            log(f"{n} users pushing at once: all live in {at_once[n]:.2f} s")
    finally:
        subprocess.run([OFC, "down"], env=platform.env, capture_output=True, timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
    first = median([p["first_s"] for p in pushes])
    redeploy = median([p["redeploy_s"] for p in pushes])
    b = median(bare)
    baseline_name = "bare minimum: shallow clone over HTTP, build folder, handler started with the cached venv, first answer"
    notes = (f"{ROUNDS} rounds after one warm-up, each a new user pushing examples/ to the built-in "
             f"git remote, then a one-line change to its handler (a rebuild with its tests and a "
             f"rolling update); medians. The redeploy waits for the gateway to serve the new commit.")  # fmt: skip
    many = max(AT_ONCE)
    growth = ", ".join(f"{n}: {t:.2f} s" for n, t in at_once.items())
    try:
        containers = run_containers(venv_dir)
    except BenchError as exc:
        log(f"push_to_live (containers): SKIPPED: {exc}")
        containers = [
            skipped(name, "s", CONTAINER_BASELINE, f"< {GOAL_CONTAINERS:g} s", str(exc))
            for name in CONTAINER_ENTRIES
        ]
    return containers + [
        entry(f"push_to_live_{many}_users_at_once", "s", at_once[many],
              "one user pushing alone, same run", at_once[1], goal=None, met=None,
              runs=[{"users": n, "all_live_s": t} for n, t in at_once.items()],
              notes=(f"N new users each git push examples/ at the same moment; time until all N "
                     f"functions answer. Growth: {growth}. The builder runs "
                     f"OFC_BUILDER_CONCURRENCY builds at once; the others wait for a slot.")),  # fmt: skip
        entry("push_to_live_first_deploy", "s", first, baseline_name, b, goal=f"< {GOAL_FIRST:g} s",
              met=first is not None and first < GOAL_FIRST, runs=[p["first_s"] for p in pushes],
              baseline_runs=bare, notes=notes),  # fmt: skip
        entry("push_to_live_one_line_change", "s", redeploy, baseline_name, b, goal=f"< {GOAL_REDEPLOY:g} s",
              met=redeploy is not None and redeploy < GOAL_REDEPLOY, runs=[p["redeploy_s"] for p in pushes],
              baseline_runs=bare, notes=notes),  # fmt: skip
    ]


# -- with containers ----------------------------------------------------------------------------
def _bare_container_round(
    engine: Any, scratch: Path, pushed: dict[str, Any], n: int, ca_file: Path | None
) -> float:
    """Clone, lay out the build folder, docker build + push + run, first answer."""
    from bench.build import bare_build

    dest = scratch / f"bare-container-{n}"
    image = f"{engine.registry}/ofc-bench-bare/hello:{n}-{time.time_ns()}"
    port = free_port()
    t0 = time.perf_counter()
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", pushed["remote"], str(dest / "src")],
        env=pushed["env"], check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    build = dest / "build"
    shutil.copytree(REPO / "template" / "python3-http", build)
    shutil.copytree(dest / "src" / "hello", build / "function", dirs_exist_ok=True)
    _append(build / "function" / "handler.py", f"# bare {time.time_ns()}")  # not in the cache
    bare_build(engine, build, image, ca_file)
    name = f"ofc-bench-bare-{n}-{os.getpid()}"
    started = engine.docker("run", "-d", "--rm", "--name", name, "--network", "host",
                            "-e", f"port={port}", "-e", "bind_address=127.0.0.1", image)  # fmt: skip
    if started.returncode != 0:
        raise BenchError(f"docker run failed: {started.stderr[-500:]}")
    try:
        return _until(
            lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200,
            "bare container answering",
        ) - t0
    finally:
        engine.docker("rm", "-f", name)
        engine.docker("rmi", image)


def run_containers(venv_dir: Path) -> list[dict[str, Any]]:
    """push-to-live with ``ofc up --containers`` on the engine the container tests use."""
    from bench.build import engine_from, why_not

    reason = why_not()
    engine = engine_from(os.environ)
    if reason is not None or engine is None:
        raise BenchError(reason or "no engine")
    scratch = Path(tempfile.mkdtemp(prefix="ofc-bench-push-containers-"))
    platform = Platform(
        scratch, venv_dir, OFC_DOCKER_HOST=engine.docker_host, OFC_REGISTRY=engine.registry,
        OFC_DOCKER_CLI=engine.docker_cli,
    )  # fmt: skip
    try:
        t = time.monotonic()
        platform.ofc("up", "--detach", "--containers")
        log(f"push_to_live (containers): platform up in {time.monotonic() - t:.1f} s")
        _push_round(platform, scratch, "cwarmup")  # the engine's layer and pip caches
        pushes, bare = [], []
        for i in range(ROUNDS):
            pushed = _push_round(platform, scratch, f"cbench{i + 1}")
            pushes.append(pushed)
            ca = platform.state / "builder" / "buildkit" / "ca-certificates.crt"  # the builder's
            bare.append(round(_bare_container_round(
                engine, scratch, pushed, i, ca if ca.is_file() else None), 4))  # fmt: skip
            log(f"containers round {i + 1}: push-to-live {pushed['first_s']:.2f} s, redeploy "
                f"{pushed['redeploy_s']:.2f} s, bare docker build+push+run {bare[-1]:.2f} s")  # fmt: skip
    finally:
        subprocess.run([OFC, "down"], env=platform.env, capture_output=True, timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
    first = median([p["first_s"] for p in pushes])
    redeploy = median([p["redeploy_s"] for p in pushes])
    b = median(bare)
    baseline_name = CONTAINER_BASELINE
    notes = (f"ofc up --containers: BuildKit through the engine, pushed to the registry, run as a "
             f"container (host network, loopback port). {ROUNDS} rounds after one warm-up "
             f"(layer and pip caches warm); the one-line change edits handler.py, so it "
             f"rebuilds the function's layers and rolls the container. Medians.")  # fmt: skip
    return [
        entry("push_to_live_containers_first_deploy", "s", first, baseline_name, b,
              goal=f"< {GOAL_CONTAINERS:g} s", met=first is not None and first < GOAL_CONTAINERS,
              runs=[p["first_s"] for p in pushes], baseline_runs=bare, notes=notes),  # fmt: skip
        entry("push_to_live_containers_one_line_change", "s", redeploy, baseline_name, b,
              goal=f"< {GOAL_CONTAINERS:g} s", met=redeploy is not None and redeploy < GOAL_CONTAINERS,
              runs=[p["redeploy_s"] for p in pushes], baseline_runs=bare, notes=notes),  # fmt: skip
    ]
