"""A local content-addressed artifact store: the process runtime's container registry.

A function's build context (template files plus ``function/``, laid out as
``faas-cli build --shrinkwrap`` leaves it) is stored once under the digest of its
content and tagged with image references, so deploying ``hello:latest`` or
``127.0.0.1:5000/alice/hello:abc123`` on the process provider resolves to a directory.

Layout under ``root``::

    blobs/sha256/<hex>/     one stored tree, read-only, never modified after the rename
    refs/<quoted ref>.json  {"image": "hello:latest", "digest": "sha256:<hex>"}
    .tmp-put-*/             a copy in progress (renamed into blobs/ when complete)

Every write is a copy or a temporary file followed by ``os.rename``, so readers see a
complete tree or none, and two processes storing the same tree end with one blob.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = ["Artifact", "ArtifactError", "ArtifactNotFound", "ArtifactStore", "normalize_image"]

# The Docker distribution reference grammar (distribution/reference/regexp.go), so a
# reference accepted here is one a real registry would accept too.
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(?::[0-9]+)?"
)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_MAX_NAME = 255
# A ref file name must fit in NAME_MAX (255 bytes on Linux) with room for ".json".
_MAX_REF_FILE = 240
_CHUNK = 1 << 20


class ArtifactError(ValueError):
    """Bad input: a malformed image reference, or a tree the store refuses (symlinks...)."""


class ArtifactNotFound(LookupError):
    """An image reference that no tag or blob in the store answers."""

    def __init__(self, image: str, root: Path) -> None:
        super().__init__(
            f"image {image!r} is not in the local artifact store ({root}); "
            "build it first (ofc deploy builds and stores it)"
        )
        self.image = image


@dataclass(frozen=True)
class Artifact:
    """A resolved image: ``path`` is the stored build context, read-only."""

    image: str  # normalised reference, e.g. "hello:latest" or "sha256:<hex>"
    digest: str  # "sha256:<64 hex>"
    path: Path


def normalize_image(ref: str) -> str:
    """Return the canonical form of an image reference, or raise :class:`ArtifactError`.

    ``hello`` -> ``hello:latest``; ``127.0.0.1:5000/alice/hello`` keeps its registry and
    gains ``:latest``; digest references (``hello@sha256:<hex>``, ``sha256:<hex>``) are
    returned as given. Whitespace, empty segments, ``.``/``..`` segments and upper-case
    repository names (which Docker rejects too) are refused.
    """
    if not ref:
        raise ArtifactError("empty image reference")
    if any(c.isspace() for c in ref):
        raise ArtifactError(f"image reference {ref!r} contains whitespace")
    if ref.startswith("sha256:"):
        return _check_digest(ref, ref)
    name, at, digest = ref.partition("@")
    if at:
        return f"{_check_name_and_tag(name, ref, default_tag=None)}@{_check_digest(digest, ref)}"
    return _check_name_and_tag(name, ref, default_tag="latest")


def _ref_digest(name: str) -> str | None:
    """Return the digest a normalised digest reference pins, or None for a tag reference."""
    if name.startswith("sha256:"):
        return name
    return name.partition("@")[2] or None


def _check_digest(digest: str, ref: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise ArtifactError(f"image reference {ref!r}: digest must be sha256:<64 lower-case hex>")
    return digest


def _check_name_and_tag(name: str, ref: str, default_tag: str | None) -> str:
    # A tag is a colon after the last slash; an earlier colon is a registry port.
    colon = name.rfind(":")
    tag = default_tag
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ArtifactError(f"image reference {ref!r}: invalid tag {tag!r}")
    _check_name(name, ref)
    return name if tag is None else f"{name}:{tag}"


def _check_name(name: str, ref: str) -> None:
    if len(name) > _MAX_NAME:
        raise ArtifactError(f"image reference {ref!r}: name longer than {_MAX_NAME} characters")
    parts = name.split("/")
    if any(p in (".", "..") for p in parts):
        raise ArtifactError(f"image reference {ref!r}: '.' and '..' segments are not allowed")
    if any(not p for p in parts):
        raise ArtifactError(f"image reference {ref!r}: empty path segment")
    # Docker's rule: the first segment is a registry when it looks like a host.
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        if not _DOMAIN.fullmatch(parts[0]):
            raise ArtifactError(f"image reference {ref!r}: invalid registry {parts[0]!r}")
        parts = parts[1:]
    for part in parts:
        if not _PATH_COMPONENT.fullmatch(part):
            raise ArtifactError(
                f"image reference {ref!r}: repository segment {part!r} must be lower-case "
                "letters and digits joined by '.', '_', '__' or '-'"
            )


def _walk(root: Path) -> list[tuple[str, bool, bool]]:
    """List ``(relative posix path, is_dir, executable)`` under ``root`` in canonical order.

    Canonical order is byte order of the relative paths, so a directory always precedes
    its contents. Anything but regular files and directories raises :class:`ArtifactError`:
    a symlink could point outside the tree, and a device or FIFO has no content to store.
    """
    entries: list[tuple[str, bool, bool]] = []
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            for entry in it:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    entries.append((rel, True, False))
                    pending.append(rel)
                elif stat.S_ISREG(mode):
                    entries.append((rel, False, bool(mode & 0o111)))
                elif stat.S_ISLNK(mode):
                    raise ArtifactError(
                        f"{root / rel}: symlinks are not allowed in a build context"
                    )
                else:
                    raise ArtifactError(f"{root / rel}: not a regular file or directory")
    entries.sort(key=lambda e: os.fsencode(e[0]))
    return entries


def _tree_digest(root: Path) -> str:
    """Return ``sha256:<hex>`` over the tree's names, entry types, executable bits and bytes.

    Timestamps, owners and other permission bits are left out, so the same tree checked
    out or built twice has the same digest. Every field is length-prefixed, so no two
    different trees frame to the same byte stream. The framing is the one
    ``sdk.build_context.context_digest`` uses (``kind len(path) path len(body) body``),
    so for a tree without symlinks the hex part equals that function's result; the two
    should become one function.
    """
    h = hashlib.sha256()
    for rel, is_dir, executable in _walk(root):
        name = os.fsencode(rel)
        if is_dir:
            h.update(b"d %d %s 0 " % (len(name), name))
            continue
        path = root / rel
        size = path.stat().st_size
        h.update(b"%s %d %s %d " % (b"x" if executable else b"f", len(name), name, size))
        read = 0
        # Streamed rather than read whole: a context may hold large data files.
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                read += len(chunk)
        if read != size:
            raise ArtifactError(f"{path}: changed while it was being read")
    return "sha256:" + h.hexdigest()


def _remove_tree(path: Path) -> None:
    """Delete a tree whose directories were made read-only by :meth:`ArtifactStore.put`."""
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o700)
    shutil.rmtree(path)


class ArtifactStore:
    """Build contexts stored by digest and named by image references under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs" / "sha256"
        self._refs = self.root / "refs"

    def put(self, src: Path) -> str:
        """Copy the tree at ``src`` into the store and return its digest (``sha256:<hex>``).

        Storing a tree that is already there changes nothing. Stored files are read-only
        (0444, or 0555 when executable) and so are directories, because a blob is shared
        by every deployment of that digest and a function must not change its own code.
        """
        src = Path(src)
        if not src.is_dir():
            raise ArtifactError(f"{src}: not a directory")
        entries = _walk(src)
        self._blobs.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-put-", dir=self.root))
        renamed = False
        try:
            for rel, is_dir, executable in entries:
                if is_dir:
                    (tmp / rel).mkdir()
                    continue
                # follow_symlinks=False: a file swapped for a symlink after _walk is copied
                # as a symlink, which _tree_digest below then refuses.
                shutil.copyfile(src / rel, tmp / rel, follow_symlinks=False)
                os.chmod(tmp / rel, 0o555 if executable else 0o444, follow_symlinks=False)
            # Hash the copy, not the source: the source may change under us, the copy won't.
            digest = _tree_digest(tmp)
            final = self._blob_path(digest)
            if final.is_dir():
                return digest
            for rel, is_dir, _x in entries:
                if is_dir:
                    os.chmod(tmp / rel, 0o555)
            os.chmod(tmp, 0o555)
            try:
                os.rename(tmp, final)
                renamed = True
            except OSError:
                # Another writer stored the same tree first; theirs is identical.
                if not final.is_dir():
                    raise
            return digest
        finally:
            if not renamed:
                _remove_tree(tmp)

    def tag(self, image: str, digest: str) -> Artifact:
        """Point ``image`` at a stored digest, replacing any previous target atomically."""
        name = normalize_image(image)
        if _ref_digest(name) is not None:
            raise ArtifactError(
                f"cannot tag digest reference {image!r}; tag a name such as hello:latest"
            )
        _check_digest(digest, digest)
        path = self._blob_path(digest)
        if not path.is_dir():
            raise ArtifactError(f"cannot tag {name!r}: {digest} is not in the store")
        ref_file = self._ref_path(name)
        self._refs.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self._refs)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"image": name, "digest": digest}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, ref_file)
        except BaseException:
            os.unlink(tmp)
            raise
        return Artifact(image=name, digest=digest, path=path)

    def resolve(self, image: str) -> Artifact:
        """Return what a tag or digest reference names, or raise :class:`ArtifactNotFound`."""
        name = normalize_image(image)
        digest = _ref_digest(name)
        if digest is None:
            try:
                digest = self._read_ref(self._ref_path(name))["digest"]
            except FileNotFoundError:
                raise ArtifactNotFound(name, self.root) from None
        path = self._blob_path(digest)
        if not path.is_dir():
            raise ArtifactNotFound(name, self.root)
        return Artifact(image=name, digest=digest, path=path)

    def list(self) -> list[Artifact]:
        """Return every tag whose blob is present, sorted by image reference."""
        if not self._refs.is_dir():
            return []
        found: list[Artifact] = []
        for ref_file in self._refs.glob("*.json"):
            if ref_file.name.startswith("."):
                continue
            ref = self._read_ref(ref_file)
            path = self._blob_path(ref["digest"])
            if path.is_dir():
                found.append(Artifact(image=ref["image"], digest=ref["digest"], path=path))
        return sorted(found, key=lambda a: a.image)

    def remove_unreferenced(self, keep: Iterable[str] = ()) -> int:
        """Delete blobs that no tag points to and that are not in ``keep``; return how many.

        ``keep`` holds digests still in use without a tag (a running deployment of a
        digest reference, or a put whose tag is not written yet).
        """
        if not self._blobs.is_dir():
            return 0
        wanted = {a.digest for a in self.list()} | {_check_digest(d, d) for d in keep}
        removed = 0
        for blob in self._blobs.iterdir():
            if f"sha256:{blob.name}" not in wanted:
                _remove_tree(blob)
                removed += 1
        return removed

    def _blob_path(self, digest: str) -> Path:
        return self._blobs / digest.removeprefix("sha256:")

    def _ref_path(self, name: str) -> Path:
        encoded = quote(name, safe="")
        if len(encoded) > _MAX_REF_FILE:
            raise ArtifactError(f"image reference {name!r} is too long to store")
        return self._refs / f"{encoded}.json"

    def _read_ref(self, ref_file: Path) -> dict[str, str]:
        try:
            ref = json.loads(ref_file.read_text(encoding="utf-8"))
            image, digest = ref["image"], ref["digest"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{ref_file}: corrupt tag file ({exc})") from exc
        return {"image": image, "digest": _check_digest(digest, str(ref_file))}
