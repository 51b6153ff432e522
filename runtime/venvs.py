"""Virtualenvs for function processes, cached by what goes into them.

A venv's key is a hash of the base interpreter and the normalised requirement texts
(the template's ``requirements.txt`` plus the function's), so redeploying a function
whose dependencies did not change installs nothing: :meth:`VenvCache.ensure` finds
``root/<key>/`` with its completion marker and returns without spawning a process.

A build happens in ``root/.tmp-<key>-<random>/`` and is renamed into place once its
marker is written, so a venv either is complete or is not there. The venv is created
``--without-pip`` (about 50 ms) and filled by the runtime's own pip through
``pip --python`` (pip >= 22.3). The rename is safe because ``bin/python`` is a symlink
to the base interpreter and ``site-packages`` is found relative to it; the one thing
that records the build path, the ``#!`` line of ``bin/`` scripts, is rewritten before
the rename.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Venv", "VenvBuildError", "VenvCache", "normalised_requirements"]

_MARKER = ".ofc-venv-complete"
_ERROR_TAIL = 20
# 128 bits of sha256 is ample for a local cache and keeps script #! lines short:
# Linux truncates them at 127 bytes on older kernels.
_KEY_HEX = 32
_LOCK_POLL_SECONDS = 0.05
# pip prints long lines (dependency conflicts); asyncio's default 64 KiB limit would raise.
_LINE_LIMIT = 1 << 20

# pip's rule: '#' at the start of a line, or after whitespace, starts a comment, so a URL
# fragment such as "git+https://host/repo#egg=x" is not one.
_COMMENT = re.compile(r"(^|\s)#.*$")
_SPACE_AROUND_OPERATOR = re.compile(r"\s*(===|==|!=|~=|<=|>=|<|>|,|;)\s*")
_LEADING_NAME = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?=$|[\[<>=!~;@( ])")
_ARCHIVE = re.compile(r"\.(whl|zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$", re.IGNORECASE)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@]+@")


class VenvBuildError(RuntimeError):
    """Creating a venv or installing into it failed; the message ends with pip's last lines."""


@dataclass(frozen=True)
class Venv:
    """A complete virtualenv: run functions with ``python`` (``path/bin/python``)."""

    key: str
    path: Path
    python: Path


def _base_interpreter() -> str:
    """Return the interpreter this process's venv (if any) was created from.

    Basing function venvs on ``sys.executable`` inside a venv would chain venvs; the
    base interpreter is what ``python -m venv`` expects.
    """
    base = getattr(sys, "_base_executable", None) or sys.executable
    return str(Path(base).resolve())


def _redact(line: str) -> str:
    """Strip URL userinfo (``https://user:token@host`` -> ``https://host``) from a line."""
    return _USERINFO.sub(r"\1", line)


def _logical_lines(text: str) -> Iterator[str]:
    """Yield lines with pip's backslash continuations joined (comments are never continued)."""
    pending = ""
    for line in text.splitlines():
        if line.endswith("\\") and not _COMMENT.match(line):
            pending += line[:-1]
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def normalised_requirements(requirement_texts: Sequence[str]) -> list[str]:
    """Return the sorted, de-duplicated requirement lines that decide a venv's content.

    Comments, blank lines and spacing are dropped (``Flask >= 3.0  # web`` becomes
    ``flask>=3.0``) and a leading project name is put in PEP 503 form. The result is a
    set, not a sequence: pip resolves all ``-r`` files together as one set of
    requirements, so reordering lines, or moving one from the template's file to the
    function's, installs the same packages and should reuse the same venv.
    """
    lines: set[str] = set()
    for text in requirement_texts:
        for raw in _logical_lines(text):
            line = " ".join(_COMMENT.sub("", raw).split())
            if not line:
                continue
            line = _SPACE_AROUND_OPERATOR.sub(r"\1", line)
            name = _LEADING_NAME.match(line)
            if name and not _ARCHIVE.search(name.group(1)):
                canonical = re.sub(r"[-_.]+", "-", name.group(1)).lower()
                line = canonical + line[name.end() :]
            lines.add(line)
    return sorted(lines)


class VenvCache:
    """Virtualenvs under ``root``, one per (interpreter, normalised requirements)."""

    def __init__(
        self, root: Path, *, python: str | None = None, pip_args: Sequence[str] = ()
    ) -> None:
        """``python`` is the interpreter venvs are based on (default: this process's base
        interpreter); ``pip_args`` go to every ``pip install`` (e.g. an index URL) and are
        not part of the key."""
        self.root = Path(root)
        self._python = python or _base_interpreter()
        self._pip_args = tuple(pip_args)
        self._identity: str | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    def key(self, requirement_texts: Sequence[str]) -> str:
        """Return the cache key: hex sha256 (first 32 digits) of interpreter and requirements."""
        body = json.dumps(
            [self._interpreter_identity(), normalised_requirements(requirement_texts)]
        )
        return hashlib.sha256(body.encode()).hexdigest()[:_KEY_HEX]

    def lookup(self, requirement_texts: Sequence[str]) -> Venv | None:
        """Return the venv for these requirements if it is already built, else None."""
        return self._complete(self.key(requirement_texts))

    async def ensure(
        self,
        requirement_texts: Sequence[str],
        progress: Callable[[str], None] | None = None,
    ) -> Venv:
        """Return the venv for ``requirement_texts``, building it first if needed.

        A built venv is returned at once and ``progress`` hears nothing. Otherwise pip's
        output goes to ``progress`` line by line (URL credentials stripped). Concurrent
        calls for the same key share one build, within this process (an asyncio lock)
        and across processes (``flock`` on ``root/.locks/<key>.lock``). A failed build
        leaves nothing behind and raises :class:`VenvBuildError`.
        """
        texts = list(requirement_texts)
        key = self.key(texts)
        if venv := self._complete(key):
            return venv
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if venv := self._complete(key):
                return venv
            async with self._file_lock(key):
                # Re-check: another process may have finished while we waited.
                if venv := self._complete(key):
                    return venv
                return await self._build(key, texts, progress or (lambda _line: None))

    def _interpreter_identity(self) -> str:
        """``"<implementation> <x.y.z> <resolved path>"`` of the base interpreter, probed once.

        The path is part of it because a venv's ``bin/python`` links to that binary.
        """
        if self._identity is None:
            path = str(Path(self._python).resolve())
            if path == _base_interpreter():
                impl, version = sys.implementation.name, platform.python_version()
            else:
                probe = (
                    "import platform, sys; "
                    "print(sys.implementation.name, platform.python_version())"
                )
                out = subprocess.run(
                    [self._python, "-c", probe], capture_output=True, text=True, check=False
                )
                if out.returncode != 0:
                    raise VenvBuildError(f"interpreter {self._python} failed: {out.stderr.strip()}")
                impl, version = out.stdout.split()
            self._identity = f"{impl} {version} {path}"
        return self._identity

    def _complete(self, key: str) -> Venv | None:
        path = self.root / key
        python = path / "bin" / "python"
        # exists() follows the symlink: a venv whose base interpreter is gone is not usable.
        if (path / _MARKER).is_file() and python.exists():
            return Venv(key=key, path=path, python=python)
        return None

    @asynccontextmanager
    async def _file_lock(self, key: str) -> AsyncIterator[None]:
        """Hold an exclusive ``flock`` for ``key``; poll so waiting never blocks the loop."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(_LOCK_POLL_SECONDS)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    async def _build(self, key: str, texts: list[str], progress: Callable[[str], None]) -> Venv:
        final = self.root / key
        self._remove_leftovers(key)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=self.root))
        try:
            progress(f"creating venv {key} from {self._python}")
            argv = [self._python, "-m", "venv", "--without-pip", str(tmp)]
            await self._run("python -m venv", argv, progress)
            if normalised_requirements(texts):
                await self._pip_install(key, tmp, texts, progress)
            _relocate_scripts(tmp, final)
            marker = {"key": key, "python": self._interpreter_identity()}
            (tmp / _MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
            os.chmod(tmp, 0o755)  # mkdtemp made it 0700; function processes may run as another user
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # best effort: the build error matters more
            raise
        progress(f"venv {key} ready")
        return Venv(key=key, path=final, python=final / "bin" / "python")

    async def _pip_install(
        self, key: str, venv: Path, texts: list[str], progress: Callable[[str], None]
    ) -> None:
        # The texts go to files outside the venv (they may name a private index with a
        # token), under a .tmp-<key>- name so a crash leaves nothing that is not cleaned.
        with tempfile.TemporaryDirectory(prefix=f".tmp-{key}-req-", dir=self.root) as req_dir:
            req_args: list[str] = []
            for i, text in enumerate(texts):
                req_file = Path(req_dir) / f"requirements-{i}.txt"
                req_file.write_text(text, encoding="utf-8")
                req_args += ["-r", str(req_file)]
            argv = [
                sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
                *self._pip_args, *req_args,
            ]  # fmt: skip
            await self._run("pip install", argv, progress)

    async def _run(self, what: str, argv: list[str], progress: Callable[[str], None]) -> None:
        """Run ``argv``, passing each output line to ``progress``; raise on a non-zero exit."""
        tail: deque[str] = deque(maxlen=_ERROR_TAIL)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            limit=_LINE_LIMIT,
            # pip --python runs a second pip under the venv's interpreter, as its child:
            # its own group lets a cancel end both, not leave that one behind.
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = _redact(raw.decode("utf-8", "replace").rstrip())
                tail.append(line)
                progress(line)
            returncode = await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled, or progress raised
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # already gone
                await proc.wait()
        if returncode != 0:
            # argv is left out of the message: pip_args may carry an index URL with a token.
            output = "\n".join(tail) or "(no output)"
            raise VenvBuildError(f"{what} failed with exit status {returncode}:\n{output}")

    def _remove_leftovers(self, key: str) -> None:
        """Delete what a crashed build of ``key`` left; only called with the key's lock held."""
        for stale in self.root.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale)
        final = self.root / key
        if final.exists():  # present but incomplete: marker missing or interpreter gone
            shutil.rmtree(final)


def _relocate_scripts(venv: Path, final: Path) -> None:
    """Point ``bin/`` scripts and ``pyvenv.cfg`` at ``final`` instead of the build path.

    pip writes the build path into each console script's ``#!`` line (and ``activate``
    sets ``VIRTUAL_ENV`` to it); after the rename those would name a directory that no
    longer exists.
    """
    old, new = os.fsencode(venv), os.fsencode(final)
    candidates = [p for p in (venv / "bin").iterdir() if not p.is_symlink() and p.is_file()]
    for path in [*candidates, venv / "pyvenv.cfg"]:
        content = path.read_bytes()
        if old in content:
            mode = path.stat().st_mode
            path.write_bytes(content.replace(old, new))
            os.chmod(path, mode)
