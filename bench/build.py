"""Builds with the builder's ``buildkit`` backend, beside a bare ``docker build`` + ``docker push``.

Needs a Docker engine and registry on loopback, named as for the container tests:
``OFC_TEST_DOCKER_HOST`` (and ``OFC_TEST_REGISTRY``, default ``127.0.0.1:5000``;
``OFC_TEST_DOCKER_CLI``, default Debian's ``/usr/bin/docker``; ``OFC_TEST_BASE_IMAGE``).
Without one every entry is recorded as skipped, with the reason.

A ``python -m builder`` with ``OFC_BUILDER_BACKEND=buildkit`` builds examples/hello's
context (laid out from examples/stack.yml as ``faas-cli build --shrinkwrap`` does); each
build gets its own one-line change to handler.py. The clock runs from just before
``POST /build`` to its answer, which comes once the image is pushed. The baseline runs
the same client with the same flags (``--network host``, the CA secret the builder
composed, ``BASE_IMAGE``) by hand: ``docker build`` then ``docker push`` of a context with
its own one-line change, to the same repository under another tag. Rounds alternate
which goes first.

* cold dependencies: one build each whose dependency layers cannot come from the cache
  (a build arg no other build used, ``PIP_TRUSTED_HOST``, reaches every pip step);
  pip's download cache (a BuildKit cache mount) is as earlier builds left it;
* warm rebuild after a one-line change: medians of ``ROUNDS`` rounds; goal ratio <= 1.2;
* three builds at once (three functions, each a one-line change): total wall time and
  each build's, beside three bare build+push run at once;
* the ``local`` backend (``OFC_VENV_DIR`` warm) building the same one-line changes.

Images go under ``<registry>/ofc-bench-<hex>/``; they are removed from the engine at the
end (and from the registry when it allows deletes).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.harness import (
    HOST,
    PROCESSES,
    REPO,
    BenchError,
    Ledger,
    deadline_loop,
    entry,
    free_port,
    http_call,
    log,
    median,
)
from sdk.build_context import builder_tar

ROUNDS = 5
THREE_ROUNDS = 3
GOAL_RATIO = 1.2
BUILD_TIMEOUT = 600.0
DEBIAN_DOCKER_CLI = "/usr/bin/docker"
BASE_IMAGE = "ofc/python3-base:bookworm"

PLANNED: list[tuple[str, str, str, str | None]] = [
    ("build_cold_dependencies", "s", "bare docker build + docker push, same flags", None),
    (
        "build_warm_one_line_change",
        "s",
        "bare docker build + docker push, same flags",
        f"ratio <= {GOAL_RATIO}",
    ),
    ("build_three_at_once", "s", "three bare docker build + docker push at once", None),
    ("build_local_backend_one_line_change", "s", "buildkit backend, same change", None),
]


@dataclass(frozen=True)
class EngineRef:
    """The engine and registry the bench builds against."""

    docker_host: str
    registry: str
    docker_cli: str
    base_image: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": "1"}

    def docker(
        self, *args: str, timeout: float = BUILD_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.docker_cli, *args], env=self.env(), capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def engine_from(env: Mapping[str, str]) -> EngineRef | None:
    host = env.get("OFC_TEST_DOCKER_HOST", "")
    if not host:
        return None
    return EngineRef(
        docker_host=host,
        registry=env.get("OFC_TEST_REGISTRY", "127.0.0.1:5000"),
        docker_cli=env.get("OFC_TEST_DOCKER_CLI", DEBIAN_DOCKER_CLI),
        base_image=env.get("OFC_TEST_BASE_IMAGE", BASE_IMAGE),
    )


def why_not(env: Mapping[str, str] = os.environ) -> str | None:
    """None when an engine and registry answer; else why this benchmark cannot run."""
    engine = engine_from(env)
    if engine is None:
        return "no Docker engine: set OFC_TEST_DOCKER_HOST (and OFC_TEST_REGISTRY) as for the container tests"
    if shutil.which(engine.docker_cli) is None:
        return f"no docker client at {engine.docker_cli} (OFC_TEST_DOCKER_CLI)"
    try:
        version = engine.docker("version", "--format", "{{.Server.Version}}", timeout=30)
    except subprocess.TimeoutExpired:
        return f"the engine at {engine.docker_host} did not answer within 30 s"
    if version.returncode != 0:
        return (
            f"the engine at {engine.docker_host} does not answer: {version.stderr.strip()[-300:]}"
        )
    host, _, port = engine.registry.rpartition(":")
    if host != HOST or not port.isdigit():
        return f"the registry must be on {HOST}:<port> (OFC_TEST_REGISTRY={engine.registry!r})"
    try:
        status, _ = http_call(int(port), "GET", "/v2/", timeout=5)
    except OSError as exc:
        return f"the registry {engine.registry} does not answer: {exc}"
    if status not in (200, 401):
        return f"the registry {engine.registry} answers /v2/ with HTTP {status}"
    return None


# -- contexts -------------------------------------------------------------------------------------
class Contexts:
    """examples/hello's build context, each with its own one-line change to handler.py."""

    def __init__(self, root: Path) -> None:
        from sdk.stack import load_stack  # the repository root is on sys.path (-m bench)

        self.root = root
        self.project = root / "project"
        shutil.copytree(REPO / "examples", self.project)
        self.handler = self.project / "hello" / "handler.py"
        self.original = self.handler.read_text()
        self.stack = load_stack(self.project / "stack.yml", {})
        self.count = 0

    def make(self) -> Path:
        """A fresh context whose handler ends with a comment no other build had."""
        from sdk.build_context import create_build_context

        self.count += 1
        self.handler.write_text(f"{self.original}# change {self.count} {time.time_ns()}\n")
        return create_build_context(
            self.stack, "hello", project_dir=self.project, template_root=REPO / "template",
            dest=self.root / "contexts" / str(self.count),
        )  # fmt: skip


# -- the builder ----------------------------------------------------------------------------------
class Builder:
    """A ``python -m builder`` process on a free loopback port."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.state_dir = root / "state"
        self.log_path = root / "builder.log"
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OFC_")}
        self.env.update(OFC_STATE_DIR=str(self.state_dir), OFC_BUILDER_PORT=str(self.port), **env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = PROCESSES.start(
                [sys.executable, "-m", "builder"], cwd=REPO, env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        for _ in deadline_loop(timeout, 0.05):
            if self.proc.poll() is not None:
                raise BenchError(f"builder exited early:\n{self.log_tail()}")
            try:
                if http_call(self.port, "GET", "/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                continue
        raise BenchError(f"builder did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            PROCESSES.stop(self.proc, timeout=30.0)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no builder log)"

    @property
    def ca_file(self) -> Path | None:
        path = self.state_dir / "builder" / "buildkit" / "ca-certificates.crt"
        return path if path.is_file() else None

    def build(self, body: bytes) -> tuple[float, dict[str, Any]]:
        """POST /build; (seconds until the answer, the BuildResult). BenchError unless 200."""
        from sdk.signing import BUILD_SIGNATURE, sign

        secret = (self.state_dir / "secrets" / "functions" / "payload-secret").read_text().strip()
        headers = {BUILD_SIGNATURE: sign(body, secret), "Content-Type": "application/x-tar"}
        t0 = time.perf_counter()
        status, raw = http_call(self.port, "POST", "/build", body, headers, BUILD_TIMEOUT)
        seconds = time.perf_counter() - t0
        result = json.loads(raw)
        if status != 200:
            raise BenchError(f"build failed (HTTP {status}): {result['log'][-20:]}")
        return seconds, result


def bare_build(engine: EngineRef, context: Path, image: str, ca_file: Path | None,
               build_args: Mapping[str, str] | None = None) -> float:  # fmt: skip
    """``docker build`` with the builder's flags, then ``docker push``; seconds for both."""
    argv = [engine.docker_cli, "build", "--progress", "plain", "--network", "host"]
    if ca_file is not None:
        argv += ["--secret", f"id=ca-certificates,src={ca_file}"]
    for name, value in {"BASE_IMAGE": engine.base_image, **(build_args or {})}.items():
        argv += ["--build-arg", f"{name}={value}"]
    argv += ["-t", image, str(context)]
    t0 = time.perf_counter()
    for step in (argv, [engine.docker_cli, "push", image]):
        done = subprocess.run(
            step, env=engine.env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"{' '.join(step[:2])} failed: {(done.stdout + done.stderr)[-800:]}")
    return time.perf_counter() - t0


def at_once(jobs: list[Callable[[], float]]) -> tuple[float, list[float]]:
    """Run ``jobs`` in threads together; (wall seconds, each job's seconds)."""
    results: list[float | BaseException | None] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as exc:  # re-raised below, in the bench's thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(jobs))]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BUILD_TIMEOUT)
    wall = time.perf_counter() - t0
    out: list[float] = []
    for result in results:
        if isinstance(result, BaseException):
            raise BenchError(f"a concurrent build failed: {result}") from result
        if result is None:
            raise BenchError(f"a concurrent build did not finish within {BUILD_TIMEOUT:g} s")
        out.append(result)
    return wall, out


def _remove(engine: EngineRef, refs: list[str]) -> None:
    """Remove the bench's images from the engine, and from the registry if it allows."""
    for ref in sorted(set(refs)):
        engine.docker("rmi", "-f", ref, timeout=60)
        name, _, tag = ref.removeprefix(engine.registry + "/").rpartition(":")
        url = f"http://{engine.registry}/v2/{name}/manifests"
        accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
        try:
            head = urllib.request.Request(f"{url}/{tag}", headers=accept, method="HEAD")
            with urllib.request.urlopen(head, timeout=10) as response:
                digest = response.headers.get("Docker-Content-Digest")
            if digest:
                delete = urllib.request.Request(f"{url}/{digest}", method="DELETE")
                urllib.request.urlopen(delete, timeout=10).close()
        except OSError:
            pass  # best effort: deletes may be off; the namespace is this run's own


# -- the benchmark --------------------------------------------------------------------------------
def run(root: Path, venv_dir: Path, ledger: Ledger) -> list[dict[str, Any]]:
    engine = engine_from(os.environ)
    if engine is None:
        raise BenchError("no engine (why_not should have said so)")
    root.mkdir(parents=True, exist_ok=True)
    namespace = f"{engine.registry}/ofc-bench-{secrets.token_hex(4)}"
    refs: list[str] = []

    def ref(function: str, tag: str) -> str:
        refs.append(f"{namespace}/{function}:{tag}")
        return refs[-1]

    contexts = Contexts(root)
    buildkit = Builder(root / "buildkit", {
        "OFC_BUILDER_BACKEND": "buildkit", "OFC_BUILDER_CONCURRENCY": "3",
        "OFC_DOCKER_CLI": engine.docker_cli, "OFC_DOCKER_HOST": engine.docker_host,
        "OFC_BUILDER_BASE_IMAGE": engine.base_image,
    })  # fmt: skip
    local = Builder(root / "local", {"OFC_BUILDER_BACKEND": "local", "OFC_VENV_DIR": str(venv_dir)})
    try:
        buildkit.start()
        local.start()
        ca = buildkit.ca_file

        # Cold dependencies: a build arg value no build has used busts the pip layers.
        ledger.wait_quiet()
        cold_args = {"PIP_TRUSTED_HOST": f"cold-{secrets.token_hex(6)}.invalid"}
        cold, _ = buildkit.build(builder_tar(contexts.make(), ref("hello", "cold"), cold_args))
        ledger.wait_quiet()
        bare_args = {"PIP_TRUSTED_HOST": f"cold-{secrets.token_hex(6)}.invalid"}
        bare_cold = bare_build(engine, contexts.make(), ref("hello", "bare-cold"), ca, bare_args)
        log(f"build: cold dependencies: builder {cold:.2f} s, bare {bare_cold:.2f} s")

        # Warm: one unmeasured build of each puts this run's layers in place.
        buildkit.build(builder_tar(contexts.make(), ref("hello", "warmup")))
        bare_build(engine, contexts.make(), ref("hello", "bare-warmup"), ca)
        warm: list[dict[str, Any]] = []
        bare: list[dict[str, Any]] = []
        for i in range(ROUNDS):
            order = ["bare", "builder"] if i % 2 == 0 else ["builder", "bare"]
            for kind in order:
                load = ledger.wait_quiet()
                context = contexts.make()
                if kind == "bare":
                    seconds = bare_build(engine, context, ref("hello", f"bare-{i}"), ca)
                    bare.append({"seconds": round(seconds, 4), "load_before": round(load, 3)})
                else:
                    body = builder_tar(context, ref("hello", f"warm-{i}"))
                    seconds, result = buildkit.build(body)
                    warm.append({
                        "seconds": round(seconds, 4), "builder_duration": result["duration"],
                        "load_before": round(load, 3),
                    })  # fmt: skip
            log(f"build round {i + 1}: builder {warm[-1]['seconds']:.2f} s, "
                f"bare {bare[-1]['seconds']:.2f} s")  # fmt: skip

        # Three at once: three functions, each a one-line change.
        three: list[dict[str, Any]] = []
        three_bare: list[dict[str, Any]] = []
        for i in range(THREE_ROUNDS):
            ledger.wait_quiet()
            bodies = [builder_tar(contexts.make(), ref(f"fn{j}", f"three-{i}")) for j in range(3)]
            wall, each = at_once([lambda b=b: buildkit.build(b)[0] for b in bodies])
            three.append({"seconds": round(wall, 4), "each": [round(s, 4) for s in each]})
            ledger.wait_quiet()
            jobs = [
                partial(bare_build, engine, contexts.make(), ref(f"fn{j}", f"bare-three-{i}"), ca)
                for j in range(3)
            ]
            wall, each = at_once(jobs)
            three_bare.append({"seconds": round(wall, 4), "each": [round(s, 4) for s in each]})
            log(f"build three at once {i + 1}: builder {three[-1]['seconds']:.2f} s, "
                f"bare {three_bare[-1]['seconds']:.2f} s")  # fmt: skip

        # The local backend, same kind of change; one unmeasured build warms its caches.
        local.build(builder_tar(contexts.make(), "hello:local-warmup"))
        local_runs: list[float] = []
        for i in range(ROUNDS):
            ledger.wait_quiet()
            seconds, _ = local.build(builder_tar(contexts.make(), f"hello:local-{i}"))
            local_runs.append(round(seconds, 4))
        log(f"build: local backend median {median(local_runs):.2f} s")
    except Exception:
        print(f"--- buildkit builder log tail ---\n{buildkit.log_tail()}", file=sys.stderr)
        raise
    finally:
        buildkit.stop()
        local.stop()
        _remove(engine, refs)

    w, b = median([r["seconds"] for r in warm]), median([r["seconds"] for r in bare])
    ratio = w / b if w and b else None
    t, tb = median([r["seconds"] for r in three]), median([r["seconds"] for r in three_bare])
    loads = [r["load_before"] for r in [*warm, *bare]]
    where = (
        f"Engine {engine.docker_host}, registry {engine.registry}, client {engine.docker_cli}. "
        "The engine's CPU counts as other processes' in the load figures, so they are "
        "taken just before each measurement."
    )
    return [
        entry(
            "build_cold_dependencies", "s", cold,
            "bare docker build + docker push of the same context, same flags", bare_cold,
            goal=None, met=None, runs=[round(cold, 4)], baseline_runs=[round(bare_cold, 4)],
            notes=(
                "One build each whose pip layers are not in the layer cache (a fresh "
                "PIP_TRUSTED_HOST build arg), template wrapper requirements (flask, waitress) "
                "installed again; pip's download cache mount as earlier builds left it; "
                f"from POST /build to the answer after the push. {where}"
            ),
        ),
        entry(
            "build_warm_one_line_change", "s", w,
            "bare docker build + docker push of the same context, same flags", b,
            goal=f"ratio <= {GOAL_RATIO}", met=ratio is not None and ratio <= GOAL_RATIO,
            runs=[r["seconds"] for r in warm], baseline_runs=[r["seconds"] for r in bare],
            notes=(
                f"examples/hello with a new one-line change to handler.py each build; {ROUNDS} "
                "rounds alternating which goes first, after one unmeasured build of each; "
                "medians. From just before POST /build to its 200 (build, tests, push); the "
                "bare baseline times docker build then docker push by hand. The builder's own "
                f"figure (BuildResult.duration) median {median([r['builder_duration'] for r in warm])} s. "
                f"Other processes used a median {median(loads):.0%} of the machine just "
                f"before the rounds. {where}"
            ),
            rounds={"builder": warm, "bare": bare},
        ),
        entry(
            "build_three_at_once", "s", t,
            "three bare docker build + docker push at once, same flags", tb,
            goal=None, met=None,
            runs=[r["seconds"] for r in three], baseline_runs=[r["seconds"] for r in three_bare],
            notes=(
                "Three functions (repositories fn0..fn2), each examples/hello with its own "
                "one-line change, posted at once (OFC_BUILDER_CONCURRENCY=3): wall time until "
                f"the last answer; {THREE_ROUNDS} rounds, medians; per-build times in rounds. "
                f"{where}"
            ),
            rounds={"builder": three, "bare": three_bare},
        ),
        entry(
            "build_local_backend_one_line_change", "s", median(local_runs),
            "the buildkit backend's warm one-line change (above)", w,
            goal=None, met=None, runs=local_runs, baseline_runs=[r["seconds"] for r in warm],
            notes=(
                "The local backend (artifact store + cached virtualenv, tests run with a "
                f"cached pytest, no container, no push) building the same changes; {ROUNDS} "
                "rounds after one unmeasured build; median."
            ),
        ),
    ]  # fmt: skip
