"""Reading a build request's tar without trusting it.

The tar is what the OpenFaaS function builder API takes (``go-sdk`` ``builder.MakeTar``)::

    com.openfaas.docker.config   {"image": "...", "buildArgs": {...}, "platforms": [...]}
    context/                     the build context: template files and function/
    context/function/handler.py
    ...

Every header is checked before a byte is written, and the whole tar is refused at the
first entry that breaks a rule, with that rule as the reason:

* names: no absolute paths, no ``..`` component, no backslash, NUL or other control
  character, valid UTF-8, at most 255 bytes a component and 1024 a path, and nothing but
  the config file and ``context/...`` (a leading ``./`` is accepted and dropped);
* types: regular files and folders only. Symbolic and hard links are refused, all of
  them, even ones that stay inside the context: that is simpler than resolving link
  chains and just as useful, since faas-cli copies a link's target into the context and
  the artifact store refuses links anyway. Devices, FIFOs and sparse files are refused;
* one entry per path, and no entry under a path that is a file;
* at most ``max_entries`` entries (default 10,000) and ``max_bytes`` of file content in
  all, counted from the headers, so a tar that would unpack to more (a "tar bomb") is
  refused before anything is written. Compressed tars are refused: the builder API sends
  plain ones, and decompressing would let a small body unpack into a large one.

Extraction then uses :mod:`tarfile`'s ``"data"`` filter (Python 3.11.4+) on the
checked members as a second line of defence: it refuses the same escapes again and
clears set-uid, set-gid and group/other write bits.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.artifacts import ArtifactError, normalize_image

__all__ = [
    "CONFIG_NAME",
    "CONTEXT_DIR",
    "MAX_ENTRIES",
    "BuildTar",
    "DockerConfig",
    "TarRefused",
    "extract_build_tar",
    "parse_config",
]

CONFIG_NAME = "com.openfaas.docker.config"
CONTEXT_DIR = "context"
MAX_ENTRIES = 10_000
MAX_CONFIG_BYTES = 64 * 1024
MAX_COMPONENT_BYTES = 255  # NAME_MAX on Linux
MAX_PATH_CHARS = 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What docker accepts as a --build-arg name is any string; we pass build args to the
# function's tests as environment variables, which need portable names.
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GZIP_MAGIC = b"\x1f\x8b"


class TarRefused(ValueError):
    """The tar or its config breaks a rule; the message names the entry and the rule."""


@dataclass(frozen=True)
class DockerConfig:
    """``com.openfaas.docker.config``: what to build the context into."""

    image: str  # normalised, always a name with a tag ("hello" -> "hello:latest")
    build_args: dict[str, str]
    platforms: tuple[str, ...]


@dataclass(frozen=True)
class BuildTar:
    """A checked, unpacked build request."""

    config: DockerConfig
    context: Path  # the unpacked context/ folder


def parse_config(raw: bytes) -> DockerConfig:
    """Parse and check the config file's bytes; :class:`TarRefused` says what is wrong.

    Unknown keys are ignored, as the Go client's ``json.Unmarshal`` does (``skipPush``
    for one, which means nothing when there is no registry).
    """
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TarRefused(f"{CONFIG_NAME}: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise TarRefused(f"{CONFIG_NAME}: must be a JSON object")
    image = body.get("image")
    if not isinstance(image, str) or not image:
        raise TarRefused(f"{CONFIG_NAME}: image is required (a string such as hello:latest)")
    try:
        image = normalize_image(image)
    except ArtifactError as exc:
        raise TarRefused(f"{CONFIG_NAME}: {exc}") from None
    if "@" in image or image.startswith("sha256:"):
        raise TarRefused(
            f"{CONFIG_NAME}: image {image!r} is a digest; give a name and tag to build"
        )
    return DockerConfig(
        image=image,
        build_args=_build_args(body.get("buildArgs")),
        platforms=_platforms(body.get("platforms")),
    )


def _build_args(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TarRefused(f"{CONFIG_NAME}: buildArgs must be an object of strings")
    for key, item in value.items():
        if not _ARG_NAME.fullmatch(key):
            raise TarRefused(
                f"{CONFIG_NAME}: build arg name {key!r} must be letters, digits and '_'"
            )
        if not isinstance(item, str) or "\x00" in item:
            raise TarRefused(f"{CONFIG_NAME}: build arg {key} must be a string without NUL")
    return dict(value)


def _platforms(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise TarRefused(f'{CONFIG_NAME}: platforms must be a list such as ["linux/amd64"]')
    return tuple(value)


def _checked_name(raw: str) -> str:
    """Return the entry's name without a leading ``./``, or raise :class:`TarRefused`."""
    shown = repr(raw)
    if _CONTROL.search(raw):
        raise TarRefused(f"entry {shown}: control characters are not allowed in names")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:  # tarfile keeps undecodable bytes as surrogates
        raise TarRefused(f"entry {shown}: name is not valid UTF-8") from None
    if raw.startswith("/"):
        raise TarRefused(f"entry {shown}: absolute paths are not allowed")
    if "\\" in raw:
        raise TarRefused(f"entry {shown}: backslashes are not allowed in names")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise TarRefused(f"entry {shown}: '..' components are not allowed")
    if not parts:
        raise TarRefused(f"entry {shown}: empty name")
    if len(raw) > MAX_PATH_CHARS:
        raise TarRefused(f"entry {shown[:60]}...: path longer than {MAX_PATH_CHARS} characters")
    if any(len(p.encode()) > MAX_COMPONENT_BYTES for p in parts):
        raise TarRefused(f"entry {shown}: a name component is over {MAX_COMPONENT_BYTES} bytes")
    name = "/".join(parts)
    if name != CONFIG_NAME and parts[0] != CONTEXT_DIR:
        raise TarRefused(
            f"entry {shown}: only {CONFIG_NAME} and {CONTEXT_DIR}/... may be in the tar"
        )
    return name


def _check_type(member: tarfile.TarInfo, name: str) -> None:
    if member.issym():
        raise TarRefused(f"entry {name!r}: symbolic links are not allowed (to {member.linkname!r})")
    if member.islnk():
        raise TarRefused(f"entry {name!r}: hard links are not allowed (to {member.linkname!r})")
    if member.ischr() or member.isblk():
        raise TarRefused(f"entry {name!r}: device files are not allowed")
    if member.isfifo():
        raise TarRefused(f"entry {name!r}: FIFOs are not allowed")
    if member.issparse():
        raise TarRefused(f"entry {name!r}: sparse files are not allowed")
    if not (member.isreg() or member.isdir()):
        raise TarRefused(f"entry {name!r}: only regular files and folders are allowed")


def extract_build_tar(
    tar_path: Path, dest: Path, *, max_bytes: int, max_entries: int = MAX_ENTRIES
) -> BuildTar:
    """Check the tar at ``tar_path`` and unpack its context into ``dest/context``.

    ``dest`` must be an empty folder the caller owns. Raises :class:`TarRefused` for
    anything the module docstring lists, for a missing or invalid config file, and for
    a tar without a ``context/`` folder; ``dest`` may then hold a partial tree.
    """
    with open(tar_path, "rb") as fh:
        if fh.read(2) == _GZIP_MAGIC:
            raise TarRefused("compressed tars are not accepted: send a plain (uncompressed) tar")
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            members, config_member = _checked_members(tar, max_bytes, max_entries)
            if config_member is None:
                raise TarRefused(f"no {CONFIG_NAME} in the tar")
            if not members:
                raise TarRefused(f"no {CONTEXT_DIR}/ folder in the tar")
            config_file = tar.extractfile(config_member)
            assert config_file is not None  # a regular file, checked
            config = parse_config(config_file.read())
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:
        # Also raised by the "data" filter should it refuse something the checks passed.
        raise TarRefused(f"not a valid tar: {exc}") from None
    context = dest / CONTEXT_DIR
    if not context.is_dir():
        raise TarRefused(f"{CONTEXT_DIR} must be a folder")
    return BuildTar(config=config, context=context)


def _checked_members(
    tar: tarfile.TarFile, max_bytes: int, max_entries: int
) -> tuple[list[tarfile.TarInfo], tarfile.TarInfo | None]:
    """Read every header, refusing the tar at the first one that breaks a rule.

    Returns the context members (renamed to their normalised names) and the config's.
    """
    members: list[tarfile.TarInfo] = []
    config: tarfile.TarInfo | None = None
    files: set[str] = set()
    seen: set[str] = set()
    parents: set[str] = set()  # every folder some entry lives in
    total = 0
    count = 0
    while (member := tar.next()) is not None:
        count += 1
        if count > max_entries:
            raise TarRefused(f"more than {max_entries} entries in the tar")
        name = _checked_name(member.name)
        _check_type(member, name)
        if name in seen:
            raise TarRefused(f"entry {name!r}: appears twice in the tar")
        seen.add(name)
        # A file must not be used as a folder, in either order of the two entries.
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in files:
                raise TarRefused(f"entry {name!r}: {parent!r} is a file, not a folder")
            parents.add(parent)
        if member.isreg():
            if name in parents:
                raise TarRefused(f"entry {name!r}: is a file, but other entries are under it")
            files.add(name)
            total += member.size
            if total > max_bytes:
                raise TarRefused(f"the files in the tar add up to more than {max_bytes} bytes")
        if name == CONFIG_NAME:
            if not member.isreg():
                raise TarRefused(f"{CONFIG_NAME} must be a regular file")
            if member.size > MAX_CONFIG_BYTES:
                raise TarRefused(f"{CONFIG_NAME} is larger than {MAX_CONFIG_BYTES} bytes")
            config = member
        else:
            member.name = name
            members.append(member)
    return members, config
