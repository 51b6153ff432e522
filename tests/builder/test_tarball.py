"""The builder's tar checks: every malicious construction refused, with its reason."""

from __future__ import annotations

import gzip
import io
import json
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.tarball import (
    CONFIG_NAME,
    MAX_CONFIG_BYTES,
    DockerConfig,
    TarRefused,
    extract_build_tar,
    parse_config,
)

CONFIG = {"image": "hello", "buildArgs": {"TEST_ENABLED": "false"}}
Entry = tuple[tarfile.TarInfo, bytes]


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> Entry:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def folder(name: str) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, b""


def special(name: str, kind: bytes, target: str = "") -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def config(body: object = CONFIG) -> Entry:
    return file(CONFIG_NAME, json.dumps(body).encode())


def make_tar(*entries: Entry, fmt: int = tarfile.GNU_FORMAT, encoding: str = "utf-8") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding=encoding) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def valid_entries() -> list[Entry]:
    """What the go-sdk's MakeTar writes: the context folder itself, its files, then the config."""
    return [
        folder("context"),
        folder("context/function"),
        file("context/index.py", b"print('hi')\n", 0o755),
        file("context/function/handler.py", b"def handle(e, c):\n    return 'hi'\n"),
        config(),
    ]


def extract(data: bytes, tmp_path: Path, **limits: int):  # type: ignore[no-untyped-def]
    path = tmp_path / "request.tar"
    path.write_bytes(data)
    dest = tmp_path / "tree"
    dest.mkdir()
    return extract_build_tar(path, dest, max_bytes=limits.get("max_bytes", 1 << 20),
                             max_entries=limits.get("max_entries", 100))  # fmt: skip


def header_only(name: str, size: int) -> bytes:
    """A tar whose one header claims ``size`` bytes that never follow (a bomb's promise)."""
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT) + b"\0" * 1024


def truncated() -> bytes:
    data = make_tar(*valid_entries()[:2], file("context/big", b"a" * 5000), config())
    return data[:1536]  # the big file's header and part of its data


REFUSED: list[tuple[str, Callable[[], bytes], str, dict[str, int]]] = [
    ("absolute-path", lambda: make_tar(file("/etc/cron.d/x"), config()), "absolute paths", {}),
    ("absolute-context", lambda: make_tar(file("/context/x"), config()), "absolute paths", {}),
    ("parent", lambda: make_tar(file("context/../x"), config()), "'..' components", {}),
    (
        "parent-deep",
        lambda: make_tar(file("context/function/../../../../home/x"), config()),
        "'..' components",
        {},
    ),
    (
        "parent-in-pax-long-name",
        lambda: make_tar(
            file("context/" + "a" * 120 + "/../../../x"), config(), fmt=tarfile.PAX_FORMAT
        ),
        "'..' components",
        {},
    ),
    ("backslash", lambda: make_tar(file("context\\..\\x"), config()), "backslashes", {}),
    ("newline", lambda: make_tar(file("context/a\nb"), config()), "control characters", {}),
    (
        "not-utf8",
        lambda: make_tar(file("context/caf\xe9"), config(), encoding="latin-1"),
        "not valid UTF-8",
        {},
    ),
    (
        "long-component",
        lambda: make_tar(file("context/" + "n" * 300), config(), fmt=tarfile.PAX_FORMAT),
        "over 255 bytes",
        {},
    ),
    ("outside-context", lambda: make_tar(file("Dockerfile"), config()), "only com.openfaas", {}),
    (
        "sibling-of-context",
        lambda: make_tar(file("contextual/x"), config()),
        "only com.openfaas",
        {},
    ),
    (
        "symlink-out",
        lambda: make_tar(special("context/l", tarfile.SYMTYPE, "/etc/passwd"), config()),
        "symbolic links are not allowed",
        {},
    ),
    (
        "symlink-in",
        lambda: make_tar(file("context/a"), special("context/l", tarfile.SYMTYPE, "a"), config()),
        "symbolic links are not allowed",
        {},
    ),
    (
        "hardlink",
        lambda: make_tar(
            file("context/a"), special("context/h", tarfile.LNKTYPE, "context/a"), config()
        ),
        "hard links are not allowed",
        {},
    ),
    (
        "hardlink-out",
        lambda: make_tar(special("context/h", tarfile.LNKTYPE, "/etc/shadow"), config()),
        "hard links are not allowed",
        {},
    ),
    ("fifo", lambda: make_tar(special("context/p", tarfile.FIFOTYPE), config()), "FIFOs", {}),
    (
        "char-device",
        lambda: make_tar(special("context/d", tarfile.CHRTYPE), config()),
        "device files",
        {},
    ),
    (
        "block-device",
        lambda: make_tar(special("context/d", tarfile.BLKTYPE), config()),
        "device files",
        {},
    ),
    (
        "sparse",
        lambda: make_tar(special("context/s", tarfile.GNUTYPE_SPARSE), config()),
        "sparse files",
        {},
    ),
    (
        "duplicate",
        lambda: make_tar(file("context/a"), file("context/a", b"y"), config()),
        "appears twice",
        {},
    ),
    (
        "file-used-as-folder",
        lambda: make_tar(file("context/a"), file("context/a/b"), config()),
        "'context/a' is a file, not a folder",
        {},
    ),
    (
        "file-after-its-children",
        lambda: make_tar(file("context/a/b"), file("context/a"), config()),
        "other entries are under it",
        {},
    ),
    (
        "too-many-entries",
        lambda: make_tar(*[file(f"context/f{i}") for i in range(6)], config()),
        "more than 5 entries",
        {"max_entries": 5},
    ),
    (
        "one-file-too-large",
        lambda: make_tar(file("context/big", b"a" * 2000), config()),
        "add up to more than 1024 bytes",
        {"max_bytes": 1024},
    ),
    (
        "files-add-up-too-large",
        lambda: make_tar(*[file(f"context/f{i}", b"a" * 400) for i in range(3)], config()),
        "add up to more than 1024 bytes",
        {"max_bytes": 1024},
    ),
    (
        "header-claims-10-GiB",
        lambda: header_only("context/bomb", 10 << 30),
        "add up to more than",
        {},
    ),
    ("no-config", lambda: make_tar(file("context/a")), f"no {CONFIG_NAME}", {}),
    (
        "config-is-a-folder",
        lambda: make_tar(folder(CONFIG_NAME), file("context/a")),
        "must be a regular file",
        {},
    ),
    (
        "config-too-large",
        lambda: make_tar(file(CONFIG_NAME, b" " * (MAX_CONFIG_BYTES + 1)), file("context/a")),
        f"larger than {MAX_CONFIG_BYTES} bytes",
        {},
    ),
    ("no-context", lambda: make_tar(config()), "no context/ folder", {}),
    (
        "context-is-a-file",
        lambda: make_tar(file("context"), config()),
        "context must be a folder",
        {},
    ),
    (
        "gzip",
        lambda: gzip.compress(make_tar(*valid_entries())),
        "compressed tars are not accepted",
        {},
    ),
    ("not-a-tar", lambda: b"PK\x03\x04 this is a zip" * 40, "not a valid tar", {}),
    ("empty", lambda: b"", "not a valid tar", {}),
    ("truncated", truncated, "not a valid tar", {}),
]


@pytest.mark.parametrize(
    ("make", "reason", "limits"),
    [pytest.param(make, reason, limits, id=name) for name, make, reason, limits in REFUSED],
)
def test_extract_of_malicious_tar_is_refused_with_its_reason(
    tmp_path: Path, make: Callable[[], bytes], reason: str, limits: dict[str, int]
) -> None:
    with pytest.raises(TarRefused) as refused:
        extract(make(), tmp_path, **limits)
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    "name",
    ["absolute-path", "parent", "symlink-out", "hardlink-out", "header-claims-10-GiB"],
)
def test_extract_of_refused_tar_writes_nothing_outside_dest(tmp_path: Path, name: str) -> None:
    make = next(m for n, m, _r, _l in REFUSED if n == name)
    with pytest.raises(TarRefused):
        extract(make(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["request.tar", "tree"]
    assert list((tmp_path / "tree").iterdir()) == []  # refused before anything was written


def test_extract_of_go_sdk_layout_returns_config_and_unpacked_context(tmp_path: Path) -> None:
    unpacked = extract(make_tar(*valid_entries()), tmp_path)
    assert unpacked.config == DockerConfig(
        image="hello:latest", build_args={"TEST_ENABLED": "false"}, platforms=()
    )
    assert unpacked.context == tmp_path / "tree" / "context"
    assert (unpacked.context / "function" / "handler.py").read_text().startswith("def handle")
    assert not (tmp_path / "tree" / CONFIG_NAME).exists()  # read, not unpacked


def test_extract_accepts_leading_dot_slash_and_no_folder_entries(tmp_path: Path) -> None:
    data = make_tar(file("./context/function/handler.py", b"h"), file(f"./{CONFIG_NAME}",
                    json.dumps(CONFIG).encode()))  # fmt: skip
    unpacked = extract(data, tmp_path)
    assert (unpacked.context / "function" / "handler.py").read_bytes() == b"h"


def test_extract_keeps_exec_bit_and_drops_setuid_and_world_write(tmp_path: Path) -> None:
    data = make_tar(file("context/run", b"#!/bin/sh\n", 0o6777), file("context/data", b"d", 0o666),
                    config())  # fmt: skip
    unpacked = extract(data, tmp_path)
    run_mode = stat.S_IMODE((unpacked.context / "run").stat().st_mode)
    data_mode = stat.S_IMODE((unpacked.context / "data").stat().st_mode)
    assert run_mode & 0o100 and not run_mode & (stat.S_ISUID | stat.S_ISGID | 0o022)
    assert not data_mode & 0o022


def test_extract_at_exactly_the_limits_succeeds(tmp_path: Path) -> None:
    entries = [file(f"context/f{i}", b"a" * 256) for i in range(3)]
    body = json.dumps(CONFIG).encode()
    data = make_tar(*entries, file(CONFIG_NAME, body))
    unpacked = extract(data, tmp_path, max_entries=4, max_bytes=3 * 256 + len(body))
    assert len(list(unpacked.context.iterdir())) == 3


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"{not json", "not valid JSON", id="not-json"),
        pytest.param(b"\xff\xfe", "not valid JSON", id="not-utf8"),
        pytest.param(b"[]", "must be a JSON object", id="not-an-object"),
        pytest.param(b"{}", "image is required", id="no-image"),
        pytest.param(b'{"image": 5}', "image is required", id="image-not-a-string"),
        pytest.param(b'{"image": "Hello/World"}', "lower-case", id="image-upper-case"),
        pytest.param(b'{"image": "a b"}', "whitespace", id="image-whitespace"),
        pytest.param(b'{"image": "../x"}', "'..' segments", id="image-parent"),
        pytest.param(
            b'{"image": "hello@sha256:' + b"a" * 64 + b'"}', "is a digest", id="image-digest"
        ),
        pytest.param(b'{"image": "h", "buildArgs": []}', "buildArgs must be", id="args-list"),
        pytest.param(
            b'{"image": "h", "buildArgs": {"A": 1}}', "must be a string", id="arg-not-string"
        ),
        pytest.param(
            b'{"image": "h", "buildArgs": {"A=B": "1"}}', "letters, digits", id="arg-name-equals"
        ),
        pytest.param(
            b'{"image": "h", "platforms": "linux/amd64"}', "platforms", id="platforms-str"
        ),
        pytest.param(b'{"image": "h", "platforms": [1]}', "platforms", id="platforms-not-str"),
    ],
)
def test_parse_config_refuses_malformed_config_naming_the_field(body: bytes, reason: str) -> None:
    with pytest.raises(TarRefused) as refused:
        parse_config(body)
    assert reason in str(refused.value)
    assert CONFIG_NAME in str(refused.value)


def test_parse_config_normalises_image_and_ignores_unknown_keys() -> None:
    body = {"image": "127.0.0.1:5000/alice/hello", "platforms": ["linux/amd64"], "skipPush": True}
    assert parse_config(json.dumps(body).encode()) == DockerConfig(
        image="127.0.0.1:5000/alice/hello:latest", build_args={}, platforms=("linux/amd64",)
    )
