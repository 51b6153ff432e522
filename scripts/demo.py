"""``make demo``: push to live on a fresh machine.

Starts the embedded platform, creates a user on its built-in git remote, ``git push``es
``examples/`` as a repository through the edge-router, waits for the pipeline, calls the
function at its user-prefixed URL (``http://demo.localhost:8000/hello``) through the
router and prints the answer and ``push-to-live``; then pushes a one-line change and
prints the redeploy time. Stops everything at the end, unless ``--keep``.

``*.localhost`` names reach loopback in browsers and curl; Python's resolver does not
know them, so the demo connects to the router's address and sends the Host header.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ofc.gitclient import git, git_env  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OFC = str(REPO / "bin" / "ofc")
USER = "demo"


def ofc(*args: str, capture: bool = False) -> str:
    result = subprocess.run([OFC, *args], text=True, capture_output=capture, check=False)
    if result.returncode != 0:
        detail = (result.stderr or "").strip() if capture else ""
        sys.exit(f"demo: `ofc {' '.join(args)}` failed {detail}")
    return result.stdout if capture else ""


def wait_for(url: str, host: str, expect: str, timeout: float = 120.0) -> str:
    """GET ``url`` (the router's loopback address) as ``host`` until it answers ``expect``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, params={"name": "demo"}, headers={"Host": host}, timeout=5)
            if response.status_code == 200 and expect in response.text:
                return response.text
        except requests.RequestException:
            pass
        time.sleep(0.02)
    sys.exit(
        f"demo: {url} did not answer with {expect!r} within {timeout:g} s; see `bin/ofc logs git-tar`"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the platform running")
    args = parser.parse_args()
    os.environ.setdefault("OFC_STATE_DIR", str(REPO / ".ofc"))
    gateway = f"http://127.0.0.1:{os.environ.setdefault('OFC_GATEWAY_PORT', '8080')}"
    router_port = os.environ.setdefault("OFC_ROUTER_PORT", "8000")
    router = f"http://127.0.0.1:{router_port}"
    host = f"{USER}.localhost:{router_port}"

    subprocess.run([OFC, "down"], capture_output=True, check=False)
    print(
        f"==> starting the platform ({gateway}, state in {os.environ['OFC_STATE_DIR']})", flush=True
    )
    ofc("up", "--detach")
    try:
        ofc("user", "remove", USER, capture=True) if USER in ofc(
            "user", "list", capture=True
        ).split() else None
        token = ofc("user", "add", USER, capture=True).strip().splitlines()[-1]
        with tempfile.TemporaryDirectory(prefix="ofc-demo-") as tmp:
            work = Path(tmp) / "hello-world"
            shutil.copytree(REPO / "examples", work)
            env = git_env(Path(tmp), USER, token)
            remote = f"{router}/git/{USER}/hello-world.git"
            git(work, env, "init", "-q", "-b", "main")
            git(work, env, "add", "-A")
            git(work, env, "commit", "-q", "-m", "hello world")
            print(f"==> git push {remote} main", flush=True)
            started = time.monotonic()
            # --force: a demo run before this one left its own history there.
            git(work, env, "push", "-q", "--force", remote, "main")
            url = f"{router}/hello"
            answer = wait_for(url, host, "Hello")
            first = time.monotonic() - started
            print(f"==> http://{host}/hello?name=demo answered: {answer.strip()}")
            print(f"push-to-live: {first:.2f} s", flush=True)

            stack = work / "stack.yml"  # one line: the greeting the function is deployed with
            stack.write_text(stack.read_text().replace("greeting: Hello", "greeting: Hi again"))
            git(work, env, "commit", "-q", "-am", "a one-line change")
            started = time.monotonic()
            git(work, env, "push", "-q", remote, "main")
            answer = wait_for(url, host, "Hi again")
            print(f"==> after a one-line change: {answer.strip()}")
            print(f"redeploy: {time.monotonic() - started:.2f} s", flush=True)
    except BaseException:
        if not args.keep:
            subprocess.run([OFC, "down"], capture_output=True, check=False)
        raise
    if args.keep:
        print(
            f"==> still running. Try `curl http://{host}/hello?name=you`; functions: `bin/ofc list`; "
            f"dashboard: http://system.localhost:{router_port}/dashboard/ (sign-in needs a GitHub "
            f"OAuth app: docs/production.md); pipeline logs: `bin/ofc logs git-tar`, "
            f"`bin/ofc logs buildshiprun`; push more to {remote}; stop with `bin/ofc down`."
        )
    else:
        ofc("down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
