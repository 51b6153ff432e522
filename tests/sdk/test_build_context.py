"""sdk.build_context: faas-cli's shrinkwrap layout, refusing paths out of the project."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tarfile
import textwrap
from pathlib import Path

import pytest

from builder.tarball import extract_build_tar
from sdk.build_context import (
    BuildContextError,
    TemplateInfo,
    builder_tar,
    context_digest,
    create_build_context,
    read_template,
    resolve_build_args,
)
from sdk.stack import Stack, StackFunction, parse_stack

TEMPLATE_YML = """\
language: python3-http
fprocess: python index.py
build_options:
  - name: dev
    packages: [make, gcc, musl-dev]
  - name: pq
    packages: [libpq-dev, gcc]
"""


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A repository with a handler ``hello/``, a shared ``sdk/`` and one template."""
    root = tmp_path / "repo"
    write_tree(
        root,
        {
            "hello/handler.py": "user handler",
            "hello/requirements.txt": "requests",
            "hello/lib/util.py": "util",
            "hello/build/stale.txt": "never copied",
            "hello/template/x.txt": "never copied",
            "sdk/__init__.py": "shared",
            "shared/data/a.json": "{}",
            "template/python3-http/template.yml": TEMPLATE_YML,
            "template/python3-http/Dockerfile": "FROM python",
            "template/python3-http/index.py": "wrapper",
            "template/python3-http/function/handler.py": "template handler",
            "template/python3-http/function/handler_test.py": "template test",
            "template/python3-http/function/tox.ini": "[tox]",
        },
    )
    return root


def stack_for(functions: str, copy: list[str] | None = None) -> Stack:
    text = "provider:\n  name: openfaas\nfunctions:\n" + textwrap.indent(
        textwrap.dedent(functions), "  "
    )
    if copy:
        text += "configuration:\n  copy:\n" + "".join(f"    - {p}\n" for p in copy)
    return parse_stack(text, filename="stack.yml", env={})


HELLO = "hello:\n  lang: python3-http\n  handler: ./hello\n  image: hello\n"


def build(project: Path, stack: Stack, name: str = "hello") -> Path:
    return create_build_context(
        stack, name, project_dir=project, template_root=project / "template",
        dest=project / "build",
    )  # fmt: skip


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- layout ----------------------------------------------------------------------------


def test_create_build_context_overlays_handler_on_template(project):
    context = build(project, stack_for(HELLO, copy=["./sdk", "./shared/data"]))
    assert context == project / "build" / "hello"
    assert tree(context) == {
        "Dockerfile": "FROM python",
        "index.py": "wrapper",
        "template.yml": TEMPLATE_YML,
        "function/handler.py": "user handler",
        "function/handler_test.py": "template test",
        "function/tox.ini": "[tox]",
        "function/requirements.txt": "requests",
        "function/lib/util.py": "util",
        "function/sdk/__init__.py": "shared",
        "function/shared/data/a.json": "{}",
    }


@pytest.mark.parametrize("entry", ["build", "template"])
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_create_build_context_never_copies_build_or_template_entries(project, entry, kind):
    handler = project / "hello"
    for name in ("build", "template"):
        target = handler / name
        if target.is_dir():
            for f in target.iterdir():
                f.unlink()
            target.rmdir()
    if kind == "file":
        (handler / entry).write_text("x")
    else:
        write_tree(handler, {f"{entry}/inner.txt": "x"})
    context = build(project, stack_for(HELLO))
    assert not (context / "function" / entry).exists()


def test_create_build_context_copies_a_single_file_copy_path(project):
    context = build(project, stack_for(HELLO, copy=["shared/data/a.json"]))
    assert (context / "function/shared/data/a.json").read_text() == "{}"
    assert not (context / "function/shared/data/b.json").exists()


def test_create_build_context_replaces_a_previous_context(project):
    write_tree(project / "build/hello", {"leftover.txt": "old", "function/old.py": "old"})
    context = build(project, stack_for(HELLO))
    assert not (context / "leftover.txt").exists()
    assert not (context / "function/old.py").exists()


def test_create_build_context_keeps_executable_bit_and_drops_setuid(project):
    script = project / "hello" / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o4755)
    mode = stat.S_IMODE((build(project, stack_for(HELLO)) / "function/run.sh").stat().st_mode)
    assert mode == 0o755


def test_create_build_context_uses_template_handler_folder(project):
    yml = project / "template/python3-http/template.yml"
    yml.write_text(TEMPLATE_YML + "handler_folder: src/app\n")
    context = build(project, stack_for(HELLO))
    assert (context / "src/app/handler.py").read_text() == "user handler"
    assert (context / "function/handler.py").read_text() == "template handler"


@pytest.mark.parametrize("lang", ["dockerfile", "Dockerfile"])
def test_create_build_context_for_dockerfile_uses_handler_folder_as_context(project, lang):
    write_tree(project, {"svc/Dockerfile": "FROM alpine", "svc/main.go": "package main"})
    stack = stack_for(f"svc:\n  lang: {lang}\n  handler: ./svc\n  image: svc\n", copy=["./sdk"])
    context = build(project, stack, "svc")
    assert tree(context) == {
        "Dockerfile": "FROM alpine",
        "main.go": "package main",
        "sdk/__init__.py": "shared",
    }


def test_create_build_context_with_project_root_handler_skips_its_own_output(project):
    (project / "Dockerfile").write_text("FROM scratch")
    stack = stack_for("root:\n  lang: dockerfile\n  handler: .\n  image: r\n")
    context = create_build_context(
        stack, "root", project_dir=project, template_root=project / "template",
        dest=project / "out",
    )  # fmt: skip
    assert (context / "Dockerfile").read_text() == "FROM scratch"
    assert not (context / "out").exists()  # dest lies inside the handler: not copied into itself
    assert (context / "hello/handler.py").read_text() == "user handler"
    assert not (context / "build").exists()


def test_create_build_context_copies_symlink_inside_project_as_regular_file(project):
    os.symlink(project / "sdk" / "__init__.py", project / "hello" / "linked.py")
    os.symlink(project / "shared", project / "hello" / "linked-dir")
    context = build(project, stack_for(HELLO))
    copied = context / "function" / "linked.py"
    assert not copied.is_symlink() and copied.read_text() == "shared"
    assert (context / "function/linked-dir/data/a.json").read_text() == "{}"
    assert not (context / "function/linked-dir").is_symlink()


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "copy", "fragment"),
    [
        ("../outside", [], "handler: '../outside' points outside the project"),
        ("/etc", [], "handler: '/etc' is an absolute path"),
        ("./hello", ["../outside"], "configuration.copy: '../outside' points outside"),
        ("./hello", ["/etc/hostname"], "configuration.copy: '/etc/hostname' is an absolute"),
        ("./hello", ["."], "configuration.copy: '.' is the whole project"),
        ("./hello", ["./"], "configuration.copy: './' is the whole project"),
        ("./hello", ["./missing"], "configuration.copy: './missing' does not exist"),
        ("./missing", [], "handler: './missing' does not exist"),
        ("./out-link", [], "handler: './out-link' is a symlink to outside the project"),
        ("./hello", ["./out-link"], "configuration.copy: './out-link' is a symlink to outside"),
    ],
    ids=["handler-parent", "handler-absolute", "copy-parent", "copy-absolute", "copy-root",
         "copy-root-slash", "copy-missing", "handler-missing", "handler-symlink-out",
         "copy-symlink-out"],
)  # fmt: skip
def test_create_build_context_refuses_paths_outside_project(project, handler, copy, fragment):
    (project.parent / "outside").mkdir()
    os.symlink(project.parent / "outside", project / "out-link")
    stack = stack_for(f"hello:\n  lang: python3-http\n  handler: {handler}\n  image: h\n", copy)
    with pytest.raises(BuildContextError) as caught:
        build(project, stack)
    assert str(caught.value).startswith(f"function 'hello': {fragment}")


@pytest.mark.parametrize(
    ("link", "target"),
    [("hello/secret", "../../secret.txt"), ("hello/lib/etc", "/etc"),
     ("shared/data/key", "../../../secret.txt")],
    ids=["file-in-handler", "folder-in-handler-subdir", "file-in-copy-path"],
)  # fmt: skip
def test_create_build_context_refuses_symlink_out_of_project(project, link, target):
    (project.parent / "secret.txt").write_text("private")
    os.symlink(target, project / link)
    with pytest.raises(BuildContextError) as caught:
        build(project, stack_for(HELLO, copy=["./shared"]))
    message = str(caught.value)
    assert message.startswith(f"function 'hello': {link}: symlink to {target!r}")
    assert "outside the project" in message


def test_create_build_context_refuses_symlink_loop(project):
    os.symlink("..", project / "hello" / "lib" / "up")
    with pytest.raises(BuildContextError, match="hello/lib/up: symlink loop"):
        build(project, stack_for(HELLO))


def test_create_build_context_refuses_dangling_symlink(project):
    os.symlink("nowhere.txt", project / "hello" / "dangling")
    with pytest.raises(BuildContextError, match="hello/dangling: symlink to a missing file"):
        build(project, stack_for(HELLO))


def test_create_build_context_refuses_fifo(project):
    os.mkfifo(project / "hello" / "pipe")
    with pytest.raises(BuildContextError, match="hello/pipe: not a regular file or folder"):
        build(project, stack_for(HELLO))


def test_create_build_context_with_missing_template_names_lang_and_root(project):
    stack = stack_for("hello:\n  lang: rust\n  handler: ./hello\n  image: h\n")
    with pytest.raises(BuildContextError) as caught:
        build(project, stack)
    assert str(caught.value) == (
        f"template 'rust' not found in {project / 'template'} (no rust/template.yml)"
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("lang: go\nhandler: ./hello\nimage: h\nskip_build: true\n", "nothing to build"),
        ("image: h\n", "nothing to build"),
        ("lang: dockerfile\nimage: h\n", "nothing to build"),
    ],
    ids=["skip-build", "image-only", "no-handler"],
)
def test_create_build_context_for_unbuildable_function_raises(project, body, fragment):
    stack = stack_for("hello:\n" + textwrap.indent(body, "  "))
    with pytest.raises(BuildContextError, match=fragment):
        build(project, stack)


def test_create_build_context_with_unknown_function_raises(project):
    with pytest.raises(BuildContextError, match="no function 'nope' in stack.yml"):
        build(project, stack_for(HELLO), "nope")


# --- read_template ---------------------------------------------------------------------


def test_read_template_parses_template_yml(project):
    assert read_template(project / "template", "python3-http") == TemplateInfo(
        language="python3-http",
        fprocess="python index.py",
        build_options={"dev": ["make", "gcc", "musl-dev"], "pq": ["libpq-dev", "gcc"]},
        handler_folder="function",
    )


@pytest.mark.parametrize(
    ("lang", "fragment"),
    [("../template", "invalid template name"), ("a/b", "invalid template name"),
     ("..", "invalid template name"), ("go", "template 'go' not found")],
    ids=["parent", "slash", "dot-dot", "missing"],
)  # fmt: skip
def test_read_template_with_bad_or_missing_name_raises(project, lang, fragment):
    with pytest.raises(BuildContextError, match=fragment):
        read_template(project / "template", lang)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("- a\n", "must be a mapping"), ("build_options: [dev]\n", "build_options[0] must be"),
     ("handler_folder: ../up\n", "must stay inside"), ("language: [\n", "cannot read")],
    ids=["list", "option-not-mapping", "handler-folder-escape", "bad-yaml"],
)  # fmt: skip
def test_read_template_with_invalid_template_yml_raises(project, content, fragment):
    (project / "template/python3-http/template.yml").write_text(content)
    with pytest.raises(BuildContextError, match=re.escape(fragment)):
        read_template(project / "template", "python3-http")


# --- resolve_build_args ----------------------------------------------------------------

TEMPLATE = TemplateInfo(
    language="python3-http",
    build_options={"dev": ["make", "gcc"], "pq": ["libpq-dev", "gcc"]},
)


@pytest.mark.parametrize(
    ("options", "build_args", "expected"),
    [
        ([], {}, {"ADDITIONAL_PACKAGE": ""}),
        (["dev"], {}, {"ADDITIONAL_PACKAGE": "gcc make"}),
        (["dev", "pq"], {}, {"ADDITIONAL_PACKAGE": "gcc libpq-dev make"}),
        (["pq"], {"ADDITIONAL_PACKAGE": "curl  gcc", "TEST_ENABLED": "false"},
         {"ADDITIONAL_PACKAGE": "curl gcc libpq-dev", "TEST_ENABLED": "false"}),
        ([], {"ADDITIONAL_PACKAGE": "zlib curl"}, {"ADDITIONAL_PACKAGE": "curl zlib"}),
    ],
    ids=["none-gives-empty", "one-option-sorted", "two-options-deduplicated",
         "merged-with-build-arg", "build-arg-only-sorted"],
)  # fmt: skip
def test_resolve_build_args_always_sets_additional_package(options, build_args, expected):
    fn = StackFunction(name="f", lang="python3-http", build_options=options, build_args=build_args)
    assert resolve_build_args(fn, TEMPLATE) == expected


def test_resolve_build_args_with_unknown_option_names_it_and_the_available_ones():
    fn = StackFunction(name="f", lang="python3-http", build_options=["dev", "mysql"])
    with pytest.raises(BuildContextError) as caught:
        resolve_build_args(fn, TEMPLATE)
    assert str(caught.value) == (
        "function 'f': unknown build option 'mysql' for template 'python3-http' "
        "(available: dev, pq)"
    )


# --- context_digest --------------------------------------------------------------------


def make_context(root: Path) -> Path:
    write_tree(root, {"Dockerfile": "FROM x", "function/handler.py": "h", "function/a/b.txt": "b"})
    (root / "empty").mkdir()
    return root


def test_context_digest_is_equal_for_identical_trees_regardless_of_mtime(tmp_path):
    one, two = make_context(tmp_path / "one"), make_context(tmp_path / "two")
    os.utime(two / "Dockerfile", (0, 0))
    digest = context_digest(one)
    assert digest == context_digest(two)
    assert len(digest) == 64 and int(digest, 16) >= 0


def _change_content(root: Path) -> None:
    (root / "function/handler.py").write_text("h2")


def _rename(root: Path) -> None:
    (root / "function/handler.py").rename(root / "function/handler2.py")


def _make_executable(root: Path) -> None:
    (root / "Dockerfile").chmod(0o755)


def _add_empty_folder(root: Path) -> None:
    (root / "function/new").mkdir()


def _move_across_folders(root: Path) -> None:
    # Same bytes under a different split of path and content must still differ.
    (root / "function/a/b.txt").rename(root / "function/ab.txt")


def _replace_file_by_symlink(root: Path) -> None:
    (root / "function/a/b.txt").unlink()
    os.symlink("b", root / "function/a/b.txt")


@pytest.mark.parametrize(
    "mutate",
    [_change_content, _rename, _make_executable, _add_empty_folder, _move_across_folders,
     _replace_file_by_symlink],
    ids=["content", "rename", "exec-bit", "empty-folder", "move", "file-to-symlink"],
)  # fmt: skip
def test_context_digest_changes_when_the_tree_changes(tmp_path, mutate):
    root = make_context(tmp_path / "ctx")
    before = context_digest(root)
    mutate(root)
    assert context_digest(root) != before


def test_context_digest_of_two_builds_of_the_same_project_is_equal(project, tmp_path):
    stack = stack_for(HELLO, copy=["./sdk"])
    kwargs = {"project_dir": project, "template_root": project / "template"}
    first = create_build_context(stack, "hello", dest=tmp_path / "a", **kwargs)
    second = create_build_context(stack, "hello", dest=tmp_path / "b", **kwargs)
    assert context_digest(first) == context_digest(second)


def test_builder_tar_has_the_config_and_the_context_no_links_and_the_builder_accepts_it(
    tmp_path: Path,
) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "function").mkdir(parents=True)
    (ctx / "index.py").write_text("print('x')\n")
    (ctx / "function" / "handler.py").write_text("def handle(e, c): pass\n")
    (ctx / "function" / "link").symlink_to("/etc/passwd")
    data = builder_tar(ctx, "reg/a/b-c:main-1", {"ADDITIONAL_PACKAGE": ""})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        config = json.load(tar.extractfile("com.openfaas.docker.config"))  # type: ignore[arg-type]
    assert config == {"image": "reg/a/b-c:main-1", "buildArgs": {"ADDITIONAL_PACKAGE": ""}}
    assert "context/index.py" in names and "context/function/handler.py" in names
    assert "context/function/link" not in names
    assert all(n == "com.openfaas.docker.config" or n.startswith("context/") for n in names)
    (tmp_path / "request.tar").write_bytes(data)
    (tmp_path / "out").mkdir()
    unpacked = extract_build_tar(tmp_path / "request.tar", tmp_path / "out", max_bytes=1 << 20)
    assert unpacked.config.image == "reg/a/b-c:main-1"
    assert (unpacked.context / "function" / "handler.py").read_text() == "def handle(e, c): pass\n"
