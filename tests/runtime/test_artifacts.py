"""The local artifact store: digests, put/tag/resolve, reference rules and garbage collection."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from runtime.artifacts import (
    Artifact,
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    _tree_digest,
    normalize_image,
)

DIGEST_A = "sha256:" + "a" * 64


def make_context(root: Path) -> Path:
    """Write a small shrinkwrapped python3-http build context and return its path."""
    (root / "function").mkdir(parents=True)
    (root / "index.py").write_text("print('index')\n")
    (root / "requirements.txt").write_text("flask\n")
    (root / "function" / "handler.py").write_text("def handle(event, context):\n    return 'hi'\n")
    (root / "function" / "requirements.txt").write_text("")
    (root / "template.yml").write_text("language: python3-http\n")
    return root


def store_files(store: ArtifactStore) -> set[str]:
    """Every path under the store root, relative, for asserting nothing was left behind."""
    return {p.relative_to(store.root).as_posix() for p in store.root.rglob("*")}


def test_tree_digest_frames_entries_in_documented_format(tmp_path: Path) -> None:
    # Stored blobs are named by this digest, and sdk.build_context.context_digest uses the
    # same framing: changing it silently would orphan every stored artifact.
    handler = b"def handle(event, context):\n    return 'hi'\n"
    (tmp_path / "function").mkdir()
    (tmp_path / "function" / "handler.py").write_bytes(handler)
    (tmp_path / "index.py").write_bytes(b"print('index')\n")
    os.chmod(tmp_path / "index.py", 0o755)

    expected = hashlib.sha256(
        b"d 8 function 0 "
        + b"f 19 function/handler.py %d " % len(handler)
        + handler
        + b"x 8 index.py 15 print('index')\n"
    )

    assert _tree_digest(tmp_path) == "sha256:" + expected.hexdigest()


def test_tree_digest_of_identical_trees_with_different_mtimes_is_equal(tmp_path: Path) -> None:
    first = make_context(tmp_path / "one")
    second = make_context(tmp_path / "two")
    for path in second.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))

    assert _tree_digest(first) == _tree_digest(second)


def _change_content(root: Path) -> None:
    (root / "function" / "handler.py").write_text("def handle(event, context):\n    return 'bye'\n")


def _rename_file(root: Path) -> None:
    (root / "index.py").rename(root / "main.py")


def _set_exec_bit(root: Path) -> None:
    os.chmod(root / "index.py", 0o755)


def _add_empty_dir(root: Path) -> None:
    (root / "static").mkdir()


def _move_between_dirs(root: Path) -> None:
    (root / "template.yml").rename(root / "function" / "template.yml")


def _split_content_across_files(root: Path) -> None:
    # Same bytes overall, different boundaries: length prefixes must tell these apart.
    (root / "index.py").write_text("print('index')\nflask\n")
    (root / "requirements.txt").write_text("")


@pytest.mark.parametrize(
    "change",
    [
        _change_content,
        _rename_file,
        _set_exec_bit,
        _add_empty_dir,
        _move_between_dirs,
        _split_content_across_files,
    ],
    ids=["content", "name", "exec-bit", "empty-dir", "moved-file", "content-boundary"],
)
def test_tree_digest_after_change_differs(tmp_path: Path, change: Callable[[Path], None]) -> None:
    context = make_context(tmp_path / "ctx")
    before = _tree_digest(context)

    change(context)

    assert _tree_digest(context) != before


def test_tree_digest_ignores_permission_bits_other_than_exec(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    before = _tree_digest(context)

    os.chmod(context / "index.py", 0o600)

    assert _tree_digest(context) == before


def test_put_returns_digest_of_tree_and_stores_a_copy(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    store = ArtifactStore(tmp_path / "store")

    digest = store.put(context)

    assert digest == _tree_digest(context)
    blob = tmp_path / "store" / "blobs" / "sha256" / digest.removeprefix("sha256:")
    assert (blob / "function" / "handler.py").read_text() == (
        context / "function" / "handler.py"
    ).read_text()


def test_put_twice_is_idempotent_and_leaves_no_temporary_copy(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    store = ArtifactStore(tmp_path / "store")
    first = store.put(context)
    files_after_first = store_files(store)

    second = store.put(context)

    assert second == first
    assert store_files(store) == files_after_first
    assert not any(name.startswith(".tmp-") for name in os.listdir(store.root))


def test_put_of_same_tree_from_many_threads_stores_one_blob(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    store = ArtifactStore(tmp_path / "store")

    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = set(pool.map(lambda _: store.put(context), range(16)))

    assert digests == {_tree_digest(context)}
    assert os.listdir(store.root / "blobs" / "sha256") == [digests.pop().removeprefix("sha256:")]
    assert not any(name.startswith(".tmp-") for name in os.listdir(store.root))


def test_put_makes_stored_tree_read_only_and_keeps_exec_bit(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    os.chmod(context / "index.py", 0o755)
    store = ArtifactStore(tmp_path / "store")

    blob = store.resolve(store.put(context)).path

    assert stat.S_IMODE((blob / "index.py").stat().st_mode) == 0o555
    assert stat.S_IMODE((blob / "function" / "handler.py").stat().st_mode) == 0o444
    assert stat.S_IMODE((blob / "function").stat().st_mode) == 0o555
    assert stat.S_IMODE(blob.stat().st_mode) == 0o555


@pytest.mark.parametrize(
    "target",
    ["function/handler.py", "/etc/passwd"],
    ids=["inside-tree", "outside-tree"],
)
def test_put_with_symlink_raises_artifact_error_and_stores_nothing(
    tmp_path: Path, target: str
) -> None:
    context = make_context(tmp_path / "ctx")
    (context / "link.py").symlink_to(target)
    store = ArtifactStore(tmp_path / "store")

    with pytest.raises(ArtifactError, match="symlinks are not allowed"):
        store.put(context)

    assert not list(store.root.rglob("*.py"))


def test_put_with_fifo_raises_artifact_error(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    os.mkfifo(context / "pipe")

    with pytest.raises(ArtifactError, match="not a regular file or directory"):
        ArtifactStore(tmp_path / "store").put(context)


def test_put_of_a_file_raises_artifact_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")

    with pytest.raises(ArtifactError, match="not a directory"):
        ArtifactStore(tmp_path / "store").put(tmp_path / "file")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("hello", "hello:latest"),
        ("hello:latest", "hello:latest"),
        ("alice/hello:abc123", "alice/hello:abc123"),
        ("127.0.0.1:5000/alice/hello", "127.0.0.1:5000/alice/hello:latest"),
        ("127.0.0.1:5000/alice/hello:abc123", "127.0.0.1:5000/alice/hello:abc123"),
        ("localhost/hello", "localhost/hello:latest"),
        (
            "Registry.Example.com/ofc/alice-hello:v1.2_rc",
            "Registry.Example.com/ofc/alice-hello:v1.2_rc",
        ),
        (DIGEST_A, DIGEST_A),
        (f"hello@{DIGEST_A}", f"hello@{DIGEST_A}"),
        (f"hello:v1@{DIGEST_A}", f"hello:v1@{DIGEST_A}"),
    ],
    ids=[
        "bare-name",
        "tagged",
        "owner-path",
        "registry-port-untagged",
        "registry-port-tagged",
        "localhost-registry",
        "domain-may-be-upper-case",
        "bare-digest",
        "name-at-digest",
        "name-tag-at-digest",
    ],
)
def test_normalize_image_accepts_valid_reference(ref: str, expected: str) -> None:
    assert normalize_image(ref) == expected


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("", "empty"),
        ("hello world", "whitespace"),
        (" hello", "whitespace"),
        ("hello\n", "whitespace"),
        ("../hello", r"'\.\.' segments"),
        ("alice/../hello", r"'\.\.' segments"),
        ("alice//hello", "empty path segment"),
        ("/hello", "empty path segment"),
        ("Alice/hello", "lower-case"),
        ("hello:", "invalid tag"),
        ("hello:-x", "invalid tag"),
        ("hello@sha256:abc", "digest must be"),
        ("sha256:" + "A" * 64, "digest must be"),
        ("hello@md5:" + "a" * 32, "digest must be"),
        ("a" * 256, "longer than 255"),
    ],
    ids=[
        "empty",
        "inner-space",
        "leading-space",
        "newline",
        "parent-prefix",
        "parent-inside",
        "double-slash",
        "leading-slash",
        "upper-case-repository",
        "empty-tag",
        "tag-leading-dash",
        "short-digest",
        "upper-case-digest",
        "other-algorithm",
        "too-long",
    ],
)
def test_normalize_image_rejects_bad_reference(ref: str, reason: str) -> None:
    with pytest.raises(ArtifactError, match=reason):
        normalize_image(ref)


@pytest.mark.parametrize(
    "spelling",
    ["hello", "hello:latest"],
    ids=["untagged", "tagged"],
)
def test_resolve_after_tag_returns_artifact_for_any_spelling(tmp_path: Path, spelling: str) -> None:
    store = ArtifactStore(tmp_path / "store")
    digest = store.put(make_context(tmp_path / "ctx"))
    tagged = store.tag("hello", digest)

    resolved = store.resolve(spelling)

    assert resolved == tagged == Artifact(image="hello:latest", digest=digest, path=tagged.path)
    assert (resolved.path / "index.py").is_file()


def test_resolve_registry_reference_round_trips_through_tag_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    digest = store.put(make_context(tmp_path / "ctx"))
    store.tag("127.0.0.1:5000/alice/hello:abc123", digest)

    assert store.resolve("127.0.0.1:5000/alice/hello:abc123").digest == digest
    with pytest.raises(ArtifactNotFound):
        store.resolve("127.0.0.1:5000/alice/hello")


@pytest.mark.parametrize(
    "make_ref",
    [lambda d: d, lambda d: f"hello@{d}", lambda d: f"never-tagged:v1@{d}"],
    ids=["bare-digest", "name-at-digest", "untagged-name-at-digest"],
)
def test_resolve_digest_reference_finds_blob_without_tag(
    tmp_path: Path, make_ref: Callable[[str], str]
) -> None:
    store = ArtifactStore(tmp_path / "store")
    digest = store.put(make_context(tmp_path / "ctx"))

    artifact = store.resolve(make_ref(digest))

    assert artifact.digest == digest
    assert artifact.image == make_ref(digest)


def test_resolve_unknown_image_raises_not_found_naming_image_and_store(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")

    with pytest.raises(ArtifactNotFound) as caught:
        store.resolve("x")

    assert str(caught.value) == (
        f"image 'x:latest' is not in the local artifact store ({tmp_path / 'store'}); "
        "build it first (ofc deploy builds and stores it)"
    )


def test_resolve_digest_not_stored_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound, match="is not in the local artifact store"):
        ArtifactStore(tmp_path / "store").resolve(DIGEST_A)


def test_tag_existing_image_moves_it_to_new_digest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    old = store.put(make_context(tmp_path / "old"))
    new_context = make_context(tmp_path / "new")
    _change_content(new_context)
    new = store.put(new_context)
    store.tag("hello", old)

    store.tag("hello", new)

    assert store.resolve("hello").digest == new
    assert [a.image for a in store.list()] == ["hello:latest"]


def test_tag_digest_not_in_store_raises_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="is not in the store"):
        ArtifactStore(tmp_path / "store").tag("hello", DIGEST_A)


def test_tag_with_digest_reference_as_name_raises_artifact_error(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    digest = store.put(make_context(tmp_path / "ctx"))

    with pytest.raises(ArtifactError, match="cannot tag digest reference"):
        store.tag(f"hello@{digest}", digest)


def test_list_returns_all_tags_sorted_by_image(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    digest = store.put(make_context(tmp_path / "ctx"))
    for image in ["zeta", "127.0.0.1:5000/alice/hello:abc", "alpha:v1"]:
        store.tag(image, digest)

    listed = store.list()

    assert [a.image for a in listed] == [
        "127.0.0.1:5000/alice/hello:abc",
        "alpha:v1",
        "zeta:latest",
    ]
    assert {a.digest for a in listed} == {digest}


def test_list_of_empty_store_is_empty(tmp_path: Path) -> None:
    assert ArtifactStore(tmp_path / "missing").list() == []


def test_remove_unreferenced_deletes_only_untagged_blobs_not_kept(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    digests = []
    for name in ["tagged", "kept", "orphan"]:
        context = make_context(tmp_path / name)
        (context / "name.txt").write_text(name)
        digests.append(store.put(context))
    tagged, kept, orphan = digests
    store.tag("hello", tagged)

    removed = store.remove_unreferenced(keep={kept})

    assert removed == 1
    assert store.resolve(tagged).digest == tagged
    assert store.resolve(kept).digest == kept
    with pytest.raises(ArtifactNotFound):
        store.resolve(orphan)


def test_remove_unreferenced_on_empty_store_returns_zero(tmp_path: Path) -> None:
    assert ArtifactStore(tmp_path / "store").remove_unreferenced() == 0
