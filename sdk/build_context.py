"""A function's Docker build context, laid out as ``faas-cli build --shrinkwrap`` does.

faas-cli (``go-sdk/builder/builder.go``, ``CreateBuildContext``) builds ``<dest>/<fn>/``:

1. the whole template folder ``<template_root>/<lang>/`` is copied in;
2. every entry of the handler folder except ones named ``build`` and ``template`` is
   copied into ``function/`` (or template.yml's ``handler_folder``), overwriting the
   template's files of the same name;
3. each ``configuration.copy`` path is copied to ``function/<path>``.

For ``lang: dockerfile`` the handler folder itself is the context and no template is used.

The project is an untrusted git checkout, so unlike faas-cli we never follow a path out
of it: handler and copy paths must stay inside ``project_dir``, and a symlink anywhere
in what we copy must point inside the project (it is then copied as a regular file or
folder). Set-uid and other special mode bits are dropped; special files are refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from sdk.stack import Stack, StackFunction, resolve_project_path

__all__ = [
    "BUILDER_CONFIG_ENTRY",
    "BuildContextError",
    "TemplateInfo",
    "read_template",
    "resolve_build_args",
    "create_build_context",
    "context_digest",
    "builder_tar",
]

# The builder's request tar: this JSON entry ({image, buildArgs}) beside ``context/``
# (go-sdk ``MakeTar``; builder/tarball.py reads it).
BUILDER_CONFIG_ENTRY = "com.openfaas.docker.config"

# Handler entries faas-cli never copies into the context.
_EXCLUDED_HANDLER_ENTRIES = ("build", "template")
# A template name is one folder under template_root; refuse anything that could walk out.
_LANGUAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class BuildContextError(ValueError):
    """The build context cannot be made; the message names the function or template."""


@dataclass(frozen=True)
class TemplateInfo:
    """What faas-cli reads from ``template/<lang>/template.yml`` (``LanguageTemplate``)."""

    language: str
    fprocess: str = ""
    build_options: dict[str, list[str]] = field(default_factory=dict)  # option -> packages
    handler_folder: str = "function"  # where the handler is overlaid, relative to context


def _template_dir(template_root: Path, lang: str) -> Path:
    if not _LANGUAGE.match(lang) or lang.endswith("."):
        raise BuildContextError(f"invalid template name {lang!r}: use one folder name")
    folder = Path(template_root) / lang
    if not (folder / "template.yml").is_file():
        raise BuildContextError(
            f"template {lang!r} not found in {template_root} (no {lang}/template.yml)"
        )
    root = os.path.realpath(template_root)
    if os.path.commonpath([root, os.path.realpath(folder)]) != root:
        raise BuildContextError(f"template {lang!r} is a symlink to outside {template_root}")
    return folder


def read_template(template_root: Path, lang: str) -> TemplateInfo:
    """Parse ``template_root/<lang>/template.yml``; raise :class:`BuildContextError`."""
    path = _template_dir(template_root, lang) / "template.yml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise BuildContextError(f"template {lang!r}: cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise BuildContextError(f"template {lang!r}: {path} must be a mapping")
    options: dict[str, list[str]] = {}
    for i, option in enumerate(data.get("build_options") or []):
        packages = (option.get("packages") or []) if isinstance(option, dict) else None
        if not isinstance(packages, list) or not option.get("name"):
            raise BuildContextError(
                f"template {lang!r}: build_options[{i}] must be {{name, packages: [...]}}"
            )
        options[str(option["name"])] = [str(p) for p in packages]
    folder = str(data.get("handler_folder") or "function")
    parts = PurePosixPath(folder).parts
    if PurePosixPath(folder).is_absolute() or ".." in parts or "\\" in folder:
        raise BuildContextError(f"template {lang!r}: handler_folder {folder!r} must stay inside")
    return TemplateInfo(
        language=str(data.get("language") or lang),
        fprocess=str(data.get("fprocess") or ""),
        build_options=options,
        handler_folder=folder,
    )


def resolve_build_args(fn: StackFunction, template: TemplateInfo) -> dict[str, str]:
    """``fn.build_args`` plus ``ADDITIONAL_PACKAGE`` as faas-cli passes it to docker build.

    Packages of each ``build_options`` entry (from template.yml) are merged with any
    ``ADDITIONAL_PACKAGE`` already in ``build_args``, de-duplicated and sorted. The key is
    always present, possibly ``""``: templates' Dockerfiles expect it.
    """
    args = dict(fn.build_args)
    packages = set(args.get("ADDITIONAL_PACKAGE", "").split())
    for option in fn.build_options:
        if option not in template.build_options:
            available = ", ".join(sorted(template.build_options)) or "none"
            raise BuildContextError(
                f"function {fn.name!r}: unknown build option {option!r} for template "
                f"{template.language!r} (available: {available})"
            )
        packages.update(template.build_options[option])
    args["ADDITIONAL_PACKAGE"] = " ".join(sorted(packages))
    return args


class _Copier:
    """Copies trees without following symlinks out of ``root``."""

    def __init__(self, function: str, root: Path, what: str, context: Path) -> None:
        self.function = function
        self.root = os.path.realpath(root)
        self.what = what  # "the project" / "the template folder", for messages
        self.context = os.path.realpath(context)
        self.active: set[str] = set()  # real paths of folders being copied (loop guard)

    def fail(self, src: Path, problem: str) -> BuildContextError:
        shown = os.path.relpath(src, self.root)
        return BuildContextError(f"function {self.function!r}: {shown}: {problem}")

    def copy(self, src: Path, dst: Path) -> None:
        real = os.path.realpath(src)
        if os.path.commonpath([self.root, real]) != self.root:
            shown = os.readlink(src) if src.is_symlink() else real
            raise self.fail(src, f"symlink to {shown!r}, outside {self.what}")
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise self.fail(src, "symlink to a missing file") from None
        if stat.S_ISDIR(st.st_mode):
            self.copy_dir(src, real, dst)
        elif stat.S_ISREG(st.st_mode):
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            shutil.copyfile(real, dst)
            # Keep rwx bits (handlers may be executables); never set-uid/gid or sticky.
            os.chmod(dst, stat.S_IMODE(st.st_mode) & 0o777)
        else:
            raise self.fail(src, "not a regular file or folder")

    def copy_dir(self, src: Path, real: str, dst: Path) -> None:
        # dest may lie inside the handler folder (handler: .): never copy our output into itself.
        if real in (self.context, os.path.dirname(self.context)):
            return
        if real in self.active:
            raise self.fail(src, "symlink loop")
        self.active.add(real)
        if dst.exists() and not dst.is_dir():
            dst.unlink()
        dst.mkdir(parents=True, exist_ok=True)
        for child in sorted(os.listdir(real)):
            self.copy(src / child, dst / child)
        self.active.discard(real)


def _project_path(
    fn: StackFunction, project: Path, relative: str, what: str, root_ok: bool
) -> Path:
    try:
        path = resolve_project_path(project, relative, allow_root=root_ok)
    except ValueError as err:
        raise BuildContextError(f"function {fn.name!r}: {what}: {err}") from err
    if not path.exists():
        raise BuildContextError(f"function {fn.name!r}: {what}: {relative!r} does not exist")
    return path


def create_build_context(
    stack: Stack, name: str, *, project_dir: Path, template_root: Path, dest: Path
) -> Path:
    """Lay out function ``name``'s build context in ``dest/<name>`` and return that path.

    ``project_dir`` is the folder holding the stack file (handler and copy paths are
    relative to it); ``template_root`` holds one folder per language template. Any
    previous ``dest/<name>`` is replaced. Put ``dest`` outside the project or at its
    ``build/``: a ``dest`` inside a copied folder (``handler: .``) is left out of the
    copy. Raises :class:`BuildContextError`.
    """
    fn = stack.functions.get(name)
    if fn is None:
        raise BuildContextError(f"no function {name!r} in {stack.path}")
    if name in (".", "..") or "/" in name or "\\" in name or not name:
        raise BuildContextError(f"function {name!r}: name cannot be a build folder")
    if fn.skip_build or not fn.lang or not fn.handler:
        raise BuildContextError(
            f"function {name!r}: nothing to build (needs lang and handler, and no skip_build)"
        )
    project = Path(os.path.realpath(project_dir))
    handler = _project_path(fn, project, fn.handler, "handler", root_ok=True)
    if not handler.is_dir():
        raise BuildContextError(f"function {name!r}: handler {fn.handler!r} is not a folder")
    context = Path(dest) / name
    if context.is_symlink() or context.is_file():
        context.unlink()
    elif context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)

    target = context
    if not fn.is_dockerfile:
        template = read_template(template_root, fn.lang)
        folder = _template_dir(template_root, fn.lang)
        _Copier(name, Path(template_root), "the template folder", context).copy_dir(
            folder, os.path.realpath(folder), context
        )
        target = context / template.handler_folder
        target.mkdir(parents=True, exist_ok=True)

    copier = _Copier(name, project, "the project", context)
    copier.active.add(os.path.realpath(handler))  # a link back to the handler is a loop
    for entry in sorted(handler.iterdir()):
        if entry.name not in _EXCLUDED_HANDLER_ENTRIES:
            copier.copy(entry, target / entry.name)
    for relative in stack.copy:
        src = _project_path(fn, project, relative, "configuration.copy", root_ok=False)
        dst = target / src.relative_to(project)
        dst.parent.mkdir(parents=True, exist_ok=True)
        copier.copy(src, dst)
    return context


def context_digest(path: Path) -> str:
    """SHA-256 (hex) of a folder's content: relative paths, types, exec bits, bytes.

    Independent of mtimes, owners and walk order, so two identical contexts give the
    same digest; symlinks are hashed by their target text, never followed.
    """
    root = Path(path)
    entries = [Path(d, n) for d, dirs, files in os.walk(root) for n in dirs + files]
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda p: p.relative_to(root).as_posix()):
        rel = entry.relative_to(root).as_posix().encode()
        st = os.lstat(entry)
        body, size = b"", 0
        if stat.S_ISLNK(st.st_mode):
            kind, body = b"l", os.readlink(entry).encode()
        elif stat.S_ISDIR(st.st_mode):
            kind = b"d"
        elif stat.S_ISREG(st.st_mode):
            kind, size = (b"x" if st.st_mode & 0o111 else b"f"), st.st_size
        else:
            kind = b"o"
        # Length-prefixed fields, so no two different trees frame to the same bytes.
        digest.update(b"%s %d %s %d " % (kind, len(rel), rel, len(body) + size) + body)
        if size:
            with entry.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def builder_tar(context: Path, image: str, build_args: Mapping[str, str] | None = None) -> bytes:
    """The builder's request body for ``context``: the config entry and ``context/``, no links.

    Sign it with the payload secret (``X-Build-Signature``) and POST it to ``/build``.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        config = json.dumps({"image": image, "buildArgs": dict(build_args or {})}).encode()
        info = tarfile.TarInfo(BUILDER_CONFIG_ENTRY)
        info.size = len(config)
        tar.addfile(info, io.BytesIO(config))
        for path in sorted(context.rglob("*")):
            if path.is_symlink():
                continue  # build contexts are made without links; never ship one
            tar.add(path, arcname=f"context/{path.relative_to(context).as_posix()}", recursive=False)
    return buffer.getvalue()
