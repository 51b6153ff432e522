"""The ``local`` backend: build a context into something the process runtime can run.

What ``docker build`` of the python3-http template does, done for the process provider:

1. the context is stored in the artifact store under its digest
   (:meth:`runtime.artifacts.ArtifactStore.put`), which is the "image";
2. the virtualenv for its requirements (``requirements.txt`` of the template, then
   ``function/requirements.txt``, the files the provider reads) is built in the shared
   :class:`runtime.venvs.VenvCache`, so deploying the image starts without installing
   anything; pip's output goes to the build log and a failing install fails the build;
3. the function's tests run as the template's Dockerfile runs them: ``pytest`` in
   ``function/`` when ``function/handler_test.py`` exists, unless the build arg
   ``TEST_ENABLED`` is ``false`` or ``0``. pytest (``PYTEST_VERSION``, default as in the
   Dockerfile) comes from its own cached venv and is appended to ``sys.path``, so the
   function's own packages win and pytest never enters the function's venv. Exit status
   5 (no tests collected) passes;
4. only then is the image reference tagged, so a failed build never changes what an
   image name deploys.

This backend is a convenience for one machine, not a sandbox: pip and the function's
tests run as the builder's user on this host, as the process runtime runs functions (a
requirements file can name local paths). The tests' environment is the build args,
``PATH`` and a scratch ``HOME``, not the builder's. System packages
(``ADDITIONAL_PACKAGE``) cannot be installed and target platforms cannot be chosen; both
are said in the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from collections import deque
from pathlib import Path

from runtime.artifacts import ArtifactError, ArtifactStore
from runtime.venvs import Venv, VenvBuildError, VenvCache

from . import BuildFailed, BuildJob, LogLine
from .command import run_streaming

__all__ = ["LocalBackend"]

log = logging.getLogger(__name__)

# Keep in step with template/python3-http/Dockerfile (ARG PYTEST_VERSION).
DEFAULT_PYTEST_VERSION = "9.2.0"
_VERSION = re.compile(r"[0-9][0-9A-Za-z.+!-]*")
_DISABLED = ("false", "0")
_TAIL = 20


class LocalBackend:
    """Builds into ``artifacts`` and ``venvs``, the stores the process provider reads."""

    def __init__(self, artifacts: ArtifactStore, venvs: VenvCache) -> None:
        self.artifacts = artifacts
        self.venvs = venvs

    async def build(self, job: BuildJob, log_line: LogLine) -> str:
        """Store, install, test, tag; return the image reference (see the module docstring)."""
        _note_unsupported(job, log_line)
        try:
            digest = await asyncio.to_thread(self.artifacts.put, job.context)
        except ArtifactError as exc:
            raise BuildFailed(f"cannot store the context: {exc}") from None
        log_line(f"stored the context as {digest}")
        stored = self.artifacts.resolve(digest).path
        requirements = _requirement_texts(stored)
        venv = await self._venv(requirements, log_line)
        if (job.context / "function" / "handler_test.py").is_file():
            if job.build_args.get("TEST_ENABLED", "true") in _DISABLED:
                log_line(f"TEST_ENABLED={job.build_args['TEST_ENABLED']}: skipping tests")
            else:
                await self._run_tests(job, venv, log_line)
        else:
            log_line("no function/handler_test.py: no tests to run")
        try:
            artifact = self.artifacts.tag(job.image, digest)
        except ArtifactError as exc:
            raise BuildFailed(f"cannot tag the image: {exc}") from None
        log.info("tagged %s -> %s", artifact.image, digest)
        log_line(f"tagged {artifact.image} -> {digest}")
        return artifact.image

    async def _venv(self, requirements: list[str], log_line: LogLine) -> Venv:
        if self.venvs.lookup(requirements) is not None:
            log_line("requirements: using the cached virtualenv")
        else:
            log_line("requirements: installing into a new virtualenv")
        try:
            return await self.venvs.ensure(requirements, log_line)
        except VenvBuildError as exc:
            # pip's own lines are in the log already; its last ERROR line says why.
            raise BuildFailed(f"installing requirements failed: {_reason(exc)}") from None

    async def _run_tests(self, job: BuildJob, venv: Venv, log_line: LogLine) -> None:
        version = job.build_args.get("PYTEST_VERSION") or DEFAULT_PYTEST_VERSION
        if not _VERSION.fullmatch(version):
            raise BuildFailed(f"PYTEST_VERSION={version!r} is not a version number")
        try:
            tools = await self.venvs.ensure([f"pytest=={version}\n"], log_line)
        except VenvBuildError as exc:
            raise BuildFailed(f"installing pytest {version} failed: {_first_line(exc)}") from None
        site = sorted(tools.path.glob("lib/python*/site-packages"))
        if not site:
            raise BuildFailed(f"pytest {version}: no site-packages in {tools.path}")
        log_line(f"running the function's tests with pytest {version}")
        # The template's Dockerfile runs exactly this in the image.
        code = (
            "import sys; sys.path.append(sys.argv[1]); import pytest; "
            "sys.exit(pytest.main(['-p', 'no:cacheprovider']))"
        )
        with tempfile.TemporaryDirectory(prefix="ofc-build-home-") as home:
            env = {
                **job.build_args,  # as in a Dockerfile RUN, build args are the environment
                "PATH": os.environ.get("PATH", os.defpath),
                "HOME": home,
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
            }
            argv = [str(venv.python), "-c", code, str(site[0])]
            status, tail = await _run(argv, job.context / "function", env, log_line)
        if status == 5:
            log_line("pytest collected no tests")
        elif status != 0:
            summary = tail[-1] if tail else "(no output)"
            raise BuildFailed(
                f"the function's tests failed (pytest exit status {status}): {summary}"
            )


def _note_unsupported(job: BuildJob, log_line: LogLine) -> None:
    packages = job.build_args.get("ADDITIONAL_PACKAGE", "").strip()
    if packages:
        log_line(
            f"warning: ADDITIONAL_PACKAGE={packages!r} not installed: the local backend "
            "cannot install system packages; they must already be on this host"
        )
    if job.platforms:
        log_line(
            f"warning: platforms {', '.join(job.platforms)} ignored: the local backend "
            "builds for this host"
        )
    if not (job.context / "index.py").is_file():
        log_line("note: no index.py in the context; deploy it with an fprocess that starts it")


def _requirement_texts(context: Path) -> list[str]:
    """The requirement files the process provider reads, in its order (runtime/providers/process.py)."""
    texts = []
    for rel in ("requirements.txt", "function/requirements.txt"):
        path = context / rel
        if path.is_file():
            try:
                texts.append(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise BuildFailed(f"{rel} is not UTF-8 text") from None
    return texts


def _reason(exc: Exception) -> str:
    """pip's last ``ERROR:`` line in ``exc`` (the cause a user can act on), else its first line.

    >>> _reason(Exception("pip install failed with exit status 1:\\nERROR: No matching distribution found for x==1"))
    'No matching distribution found for x==1'
    """
    errors = [line for line in str(exc).splitlines() if line.startswith("ERROR: ")]
    return errors[-1].removeprefix("ERROR: ") if errors else _first_line(exc)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


async def _run(
    argv: list[str], cwd: Path, env: dict[str, str], log_line: LogLine
) -> tuple[int, list[str]]:
    """Run ``argv``, passing each output line to ``log_line``; return the status and last lines."""
    tail: deque[str] = deque(maxlen=_TAIL)

    def line(text: str) -> None:
        tail.append(text)
        log_line(text)

    status = await run_streaming(argv, line, env=env, cwd=cwd)
    return status, list(tail)
