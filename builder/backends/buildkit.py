"""The ``buildkit`` backend: build the context's Dockerfile with BuildKit, push the image.

Two ways, chosen by :class:`builder.config.BuildkitSettings`:

* through the Docker engine (the default)::

      DOCKER_BUILDKIT=1 docker build --progress plain --network host [--platform P]
          [--secret id=ca-certificates,src=BUNDLE] --build-arg K=V ... -t IMAGE CONTEXT
      docker push IMAGE

  The engine's layer cache serves every build (no ``--no-cache``), so a change to the
  handler rebuilds only the layers after ``COPY function/``. One target platform at most.
  ``--network host`` because the engine may have no bridge network (``ofc engine``).
* through a buildkitd (``OFC_BUILDKIT_ADDR``)::

      buildctl --addr ADDR build --frontend dockerfile.v0 --local context=CONTEXT
          --local dockerfile=CONTEXT --opt build-arg:K=V ... [--opt platform=P1,P2]
          [--secret id=ca-certificates,src=BUNDLE]
          --output type=image,name=IMAGE,push=true --progress plain

  Build and push in one step, for any number of platforms. The network of RUN steps is
  buildkitd's own setting.

Build args are the request's, plus ``BASE_IMAGE`` from the configuration when the request
gives none. The CA certificates builds trust (the system bundle and
``OFC_BUILDER_EXTRA_CA``, validated and joined once at start by
:func:`compose_ca_bundle`) go in as the BuildKit secret ``ca-certificates``: a secret is
mounted for the RUN steps that ask for it and is never written into a layer.

Every line the clients print goes to the build log as it comes. When a client fails,
BuildKit's plain progress is read back (:class:`Progress`) for the reason a user can act
on: pip's ``No matching distribution`` line, pytest's failures and counts, apt's ``E:``
line, or the engine's own error. Cancelling a build (``OFC_BUILDER_TIMEOUT``, the
builder stopping) kills the client's process group; the engine then cancels the build.

Not a sandbox: the Dockerfile is the user's, and its RUN steps share the host's network.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509

from builder.config import BuildkitSettings, ConfigError

from . import BuildFailed, BuildJob, LogLine
from .command import run_streaming

__all__ = [
    "CA_SECRET_ID",
    "BuildkitBackend",
    "Progress",
    "build_args",
    "buildctl_argv",
    "check_buildctl",
    "check_docker_cli",
    "compose_ca_bundle",
    "docker_build_argv",
    "docker_push_argv",
    "read_extra_ca",
]

log = logging.getLogger(__name__)

CA_SECRET_ID = "ca-certificates"  # what template/python3-http/Dockerfile mounts
CA_FILE_NAME = "ca-certificates.crt"
_TAIL = 40  # output lines kept per build step, to explain a failure
_REASON_CHARS = 600
_PROBE_TIMEOUT = 30.0
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_USERINFO = re.compile(r"(://)[^/@\s]+@")  # credentials in an index URL
_STEP = re.compile(r"#(\d+) (.*)")
_ELAPSED = re.compile(r"\d+\.\d+ (.*)")  # "#12 2.427 text": the step's own output
_PYTEST_SUMMARY = re.compile(r"=+ (.*\b(?:failed|errors?)\b.* in [\d.]+s\b.*?) =+")


# -- start: the clients and the CA bundle --------------------------------------------------------
def check_docker_cli(cli: str, env: Mapping[str, str]) -> str:
    """The docker client's path, once it has shown it can build with BuildKit.

    ``DOCKER_BUILDKIT=1 docker build --help`` needs no engine: Debian's 20.10 client
    answers with its BuildKit options (``--secret``), while a newer client without the
    buildx plugin refuses ("BuildKit is enabled but the buildx component is missing").
    Raises :class:`ConfigError` naming ``OFC_DOCKER_CLI``.
    """
    path = shutil.which(cli)
    if path is None:
        raise ConfigError(
            f"OFC_DOCKER_CLI={cli!r}: no such executable; point it at a docker client "
            "that builds with BuildKit, such as Debian's /usr/bin/docker"
        )
    try:
        done = subprocess.run(
            [path, "build", "--help"],
            env={**env, "DOCKER_BUILDKIT": "1"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"OFC_DOCKER_CLI={cli!r}: cannot run it: {exc}") from None
    if done.returncode != 0 or "--secret" not in done.stdout:
        said = _first_line(done.stderr) or _first_line(done.stdout) or f"status {done.returncode}"
        raise ConfigError(
            f"OFC_DOCKER_CLI={cli!r} cannot build with BuildKit ({said}); set OFC_DOCKER_CLI "
            "to a client that can, such as Debian's /usr/bin/docker (20.10), or install "
            "the buildx plugin for this one"
        )
    return path


def check_buildctl(buildctl: str) -> str:
    """The path of ``buildctl``, once ``buildctl --version`` has run; :class:`ConfigError` if not."""
    path = shutil.which(buildctl)
    if path is None:
        raise ConfigError(
            f"OFC_BUILDKIT_ADDR is set but OFC_BUILDCTL={buildctl!r} is not an executable: "
            "install BuildKit's buildctl or point OFC_BUILDCTL at it"
        )
    try:
        done = subprocess.run(
            [path, "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=_PROBE_TIMEOUT,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"OFC_BUILDCTL={buildctl!r}: cannot run it: {exc}") from None
    if done.returncode != 0:
        said = _first_line(done.stderr) or f"status {done.returncode}"
        raise ConfigError(f"OFC_BUILDCTL={buildctl!r}: `buildctl --version` failed: {said}")
    return path


def read_extra_ca(path: Path) -> bytes:
    """The PEM certificates in ``path`` (``OFC_BUILDER_EXTRA_CA``), checked to be just that.

    Raises :class:`ConfigError` when the file cannot be read, holds no certificate that
    parses, or holds a private key (which must never be handed to a build).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"OFC_BUILDER_EXTRA_CA={str(path)!r}: {exc.strerror or exc}") from None
    if b"PRIVATE KEY-----" in data:
        raise ConfigError(
            f"OFC_BUILDER_EXTRA_CA={str(path)!r} holds a private key: give a file with "
            "only the CA certificates"
        )
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(
            f"OFC_BUILDER_EXTRA_CA={str(path)!r}: not PEM certificates "
            f"(-----BEGIN CERTIFICATE----- blocks): {exc}"
        ) from None
    return data


def compose_ca_bundle(bundle: Path | None, extra: Path | None, dest_dir: Path) -> Path | None:
    """Join ``bundle`` and ``extra`` into ``dest_dir/ca-certificates.crt``; None if neither.

    Done once per builder start. The folder is the builder's own (0700); the file is
    0644, written whole and renamed into place so no build reads half of it.
    """
    parts: list[bytes] = []
    if bundle is not None:
        try:
            data = bundle.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"OFC_BUILDER_CA_BUNDLE={str(bundle)!r}: {exc.strerror or exc}"
            ) from None
        if _PEM_CERTIFICATE not in data:
            raise ConfigError(f"OFC_BUILDER_CA_BUNDLE={str(bundle)!r}: no PEM certificate in it")
        parts.append(data)
    if extra is not None:
        parts.append(read_extra_ca(extra))
    if not parts:
        return None
    dest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(dest_dir, 0o700)
    dest = dest_dir / CA_FILE_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{CA_FILE_NAME}.", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(p if p.endswith(b"\n") else p + b"\n" for p in parts))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise
    return dest


# -- commands -------------------------------------------------------------------------------------
def build_args(job: BuildJob, base_image: str) -> dict[str, str]:
    """The request's build args, with ``BASE_IMAGE`` defaulted to ``base_image``."""
    args = dict(job.build_args)
    if not args.get("BASE_IMAGE"):
        args["BASE_IMAGE"] = base_image
    return args


def docker_build_argv(
    cli: str, job: BuildJob, args: Mapping[str, str], ca_file: Path | None
) -> list[str]:
    """``docker build`` of ``job`` (run with ``DOCKER_BUILDKIT=1``); one platform at most."""
    argv = [cli, "build", "--progress", "plain", "--network", "host"]
    if job.platforms:
        argv += ["--platform", job.platforms[0]]
    if ca_file is not None:
        argv += ["--secret", f"id={CA_SECRET_ID},src={ca_file}"]
    for name, value in args.items():
        argv += ["--build-arg", f"{name}={value}"]
    return [*argv, "-t", job.image, str(job.context)]


def docker_push_argv(cli: str, image: str) -> list[str]:
    """``docker push`` of ``image``."""
    return [cli, "push", image]


def buildctl_argv(
    buildctl: str, addr: str, job: BuildJob, args: Mapping[str, str], ca_file: Path | None
) -> list[str]:
    """``buildctl build`` of ``job`` that also pushes the image, for any platforms.

    A registry on loopback is pushed to over plain HTTP (``registry.insecure``), as the
    Docker engine does for 127.0.0.0/8 on its own.
    """
    context = str(job.context)
    argv = [
        buildctl, "--addr", addr, "build", "--frontend", "dockerfile.v0",
        "--local", f"context={context}", "--local", f"dockerfile={context}",
    ]  # fmt: skip
    for name, value in args.items():
        argv += ["--opt", f"build-arg:{name}={value}"]
    if job.platforms:
        argv += ["--opt", f"platform={','.join(job.platforms)}"]
    if ca_file is not None:
        argv += ["--secret", f"id={CA_SECRET_ID},src={ca_file}"]
    output = f"type=image,name={job.image},push=true"
    if _loopback_registry(job.image):
        output += ",registry.insecure=true"
    return [*argv, "--output", output, "--progress", "plain"]


def _registry(image: str) -> str | None:
    """The registry host an image names, or None for a Docker Hub name (``alice/hello``)."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def _loopback_registry(image: str) -> bool:
    registry = _registry(image)
    if registry is None:
        return False
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- reading BuildKit's progress ----------------------------------------------------------------
class Progress:
    """BuildKit's ``--progress plain`` output, kept per step so a failure can be explained.

    The lines look like ``#12 [ 8/13] RUN pip install ...`` (a step's name, first),
    ``#12 2.431 ERROR: No matching distribution ...`` (its output, after the seconds
    since it started), ``#12 ERROR: ...exit code: 1`` (it failed) and ``#12 DONE 2.7s``;
    anything without ``#N`` is the client's own (``docker push``, the closing error).
    """

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.output: dict[str, deque[str]] = {}
        self.failed: list[tuple[str, str]] = []  # (step, BuildKit's error), in order
        self.other: deque[str] = deque(maxlen=_TAIL)

    def feed(self, line: str) -> None:
        """Take one output line."""
        match = _STEP.fullmatch(line)
        if match is None:
            text = line.strip()
            if text and text != "------":
                self.other.append(text)
            return
        step, rest = match.groups()
        if step not in self.names:
            self.names[step] = rest
            self.output[step] = deque(maxlen=_TAIL)
        elif rest.startswith("ERROR"):
            self.failed.append((step, rest.removeprefix("ERROR").lstrip(": ")))
        elif any(step == done for done, _ in self.failed):
            pass  # docker repeats a failed step's last lines in its closing summary
        elif (out := _ELAPSED.fullmatch(rest)) is not None:
            self.output[step].append(out.group(1).rstrip())

    def reason(self, status: int) -> str:
        """Why the client exited with ``status``, in words a user can act on."""
        if self.failed:
            step, error = self.failed[0]
            detail = explain(list(self.output[step])) or error
            text = f"{detail} (in step {_short(self.names[step])})"
        elif self.other:
            text = self.other[-1]
        else:
            text = f"exited with status {status} without saying why"
        if len(text) > _REASON_CHARS:
            text = text[:_REASON_CHARS] + "…"
        return text


def explain(lines: Sequence[str]) -> str:
    """The line of a failed step's output that says why it failed, or ``""``.

    pytest's result (first failure and counts) comes first, then the last error line of
    pip (``ERROR:``), apt (``E:``) or another tool (``error:``), then the last line.
    """
    lines = [line for line in lines if line.strip()]
    for line in reversed(lines):
        summary = _PYTEST_SUMMARY.fullmatch(line)
        if summary:
            failures = [x for x in lines if x.startswith(("FAILED ", "ERROR "))]
            first = f"{failures[0]}; " if failures else ""
            return f"the function's tests failed: {first}{summary.group(1)}"
    for prefix in ("ERROR: ", "E: ", "error: "):
        found = [x for x in lines if x.startswith(prefix)]
        if found:
            return found[-1]
    return lines[-1] if lines else ""


def _short(name: str, head: int = 60, tail: int = 40) -> str:
    """A step's name for one line: no mount options, and the middle of a long command cut,
    since its end usually says what it does (``... -r function/requirements.txt``)."""
    name = " ".join(word for word in name.split() if not word.startswith("--mount="))
    return name if len(name) <= head + tail + 3 else f"{name[:head]} … {name[-tail:]}"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


# -- the backend ---------------------------------------------------------------------------------
class BuildkitBackend:
    """Builds contexts with BuildKit and pushes the images (see the module docstring)."""

    def __init__(
        self, settings: BuildkitSettings, client: str, env: Mapping[str, str], ca_file: Path | None
    ) -> None:
        self.settings = settings
        self.client = client  # docker, or buildctl when settings.buildkit_addr is set
        self.env = dict(env)
        self.ca_file = ca_file

    @classmethod
    def open(cls, settings: BuildkitSettings, private_dir: Path) -> BuildkitBackend:
        """Check the client and the CA files, write the CA bundle; :class:`ConfigError` if not."""
        env = {"PATH": os.defpath, **settings.client_env}
        if settings.buildkit_addr:
            client = check_buildctl(settings.buildctl)
        else:
            env.update(DOCKER_HOST=settings.docker_host, DOCKER_BUILDKIT="1")
            client = check_docker_cli(settings.docker_cli, env)
        ca_file = compose_ca_bundle(settings.ca_bundle, settings.extra_ca, private_dir)
        where = settings.buildkit_addr or settings.docker_host
        log.info("buildkit backend: %s at %s; CA bundle %s", client, where, ca_file or "none")
        return cls(settings, client, env, ca_file)

    async def build(self, job: BuildJob, log_line: LogLine) -> str:
        """Build ``job``'s Dockerfile and push the image; return its reference."""
        if _registry(job.image) is None:
            raise BuildFailed(
                f"{job.image} names no registry, so it would be pushed to Docker Hub: "
                f"name the registry, e.g. 127.0.0.1:5000/{job.image} or docker.io/{job.image}"
            )
        if not (job.context / "Dockerfile").is_file():
            raise BuildFailed("the context has no Dockerfile")
        args = build_args(job, self.settings.base_image)
        if self.settings.buildkit_addr:
            argv = buildctl_argv(self.client, self.settings.buildkit_addr, job, args, self.ca_file)
            await self._run(argv, f"building and pushing {job.image} failed", log_line)
            return job.image
        if len(job.platforms) > 1:
            raise BuildFailed(
                f"building for several platforms ({', '.join(job.platforms)}) needs buildctl: "
                "the Docker engine builds one; set OFC_BUILDKIT_ADDR to a buildkitd address"
            )
        argv = docker_build_argv(self.client, job, args, self.ca_file)
        await self._run(argv, "docker build failed", log_line)
        await self._run(
            docker_push_argv(self.client, job.image), f"pushing {job.image} failed", log_line
        )
        return job.image

    async def _run(self, argv: list[str], failure: str, log_line: LogLine) -> None:
        """Run one client command, every line to ``log_line``; :class:`BuildFailed` if it fails.

        Cancelling kills the client's process group.
        """
        log_line("$ " + _USERINFO.sub(r"\1***@", " ".join(argv)))
        progress = Progress()

        def line(text: str) -> None:
            if text:
                progress.feed(text)
                log_line(text)

        status = await run_streaming(argv, line, env=self.env)
        if status != 0:
            reason = progress.reason(status)
            if "Cannot connect to the Docker daemon" in reason:
                reason += " (OFC_DOCKER_HOST)"
            raise BuildFailed(f"{failure}: {reason}")
