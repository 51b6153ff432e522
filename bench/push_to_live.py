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
  moment; the time until every one of the N functions answers, beside one user alone.
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

from bench.harness import PROCESSES, BenchError, entry, free_port, log, median
from ofc.gitclient import git, git_env

REPO = Path(__file__).resolve().parent.parent
OFC = str(REPO / "bin" / "ofc")
ROUNDS = 3
AT_ONCE = (1, 2, 5, 10)
TIMEOUT = 120.0
POLL = 0.01
GOAL_FIRST = 2.0
GOAL_REDEPLOY = 1.5


class Platform:
    def __init__(self, root: Path, venv_dir: Path) -> None:
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


def _prepare_repo(platform: Platform, scratch: Path, user: str) -> tuple[Path, dict[str, str], str]:
    """A new user with ``examples/`` committed, ready to push: (work tree, git env, remote)."""
    token = platform.ofc("user", "add", user).strip().splitlines()[-1]
    home = scratch / f"home-{user}"
    home.mkdir(parents=True)
    env = git_env(home, user, token)
    work = scratch / f"repo-{user}"
    shutil.copytree(REPO / "examples", work)
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

    handler = work / "hello" / "handler.py"
    handler.write_text(handler.read_text() + "# a one-line change\n")
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
    return [
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
