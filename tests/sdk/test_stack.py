"""sdk.stack: parsing faas-cli stack files, strictly and with line numbers."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from sdk.openfaas import Resources
from sdk.stack import (
    Stack,
    StackError,
    StackFunction,
    check_languages,
    filter_functions,
    load_stack,
    parse_stack,
    resolve_environment,
    resolve_project_path,
)

HEAD = "version: 1.0\nprovider:\n  name: openfaas\n  gateway: http://127.0.0.1:8080\nfunctions:\n"


def parse(text: str, env: dict[str, str] | None = None) -> Stack:
    return parse_stack(text, filename="stack.yml", env=env or {})


def with_function(body: str) -> str:
    """A stack file whose single function ``fn`` (line 6) has the fields in ``body``."""
    return HEAD + "  fn:\n" + textwrap.indent(textwrap.dedent(body), "    ")


def one_function(body: str) -> StackFunction:
    return parse(with_function(body)).functions["fn"]


def error_of(text: str, env: dict[str, str] | None = None) -> StackError:
    with pytest.raises(StackError) as caught:
        parse(text, env)
    return caught.value


# --- whole-file shape ------------------------------------------------------------------


def test_parse_stack_minimal_file_gives_typed_records():
    stack = parse(with_function("lang: python3-http\nhandler: ./fn\nimage: fn:latest\n"))
    assert (stack.path, stack.version, stack.provider_name) == ("stack.yml", "1.0", "openfaas")
    assert stack.gateway == "http://127.0.0.1:8080"
    assert (stack.templates, stack.copy) == ([], [])
    assert stack.functions["fn"] == StackFunction(
        name="fn", lang="python3-http", handler="./fn", image="fn:latest", line=6
    )


def test_parse_stack_keeps_function_file_order_and_key_lines():
    text = HEAD + "  zeta:\n    image: z\n\n  alpha:\n    image: a\n  mid:\n    image: m\n"
    stack = parse(text)
    assert list(stack.functions) == ["zeta", "alpha", "mid"]
    assert [fn.line for fn in stack.functions.values()] == [6, 9, 11]


@pytest.mark.parametrize(
    ("version_line", "expected"),
    [("version: 1.0\n", "1.0"), ("version: '1.0'\n", "1.0"), ("", "")],
    ids=["number", "quoted", "absent"],
)
def test_parse_stack_accepts_schema_version_1_0(version_line, expected):
    text = version_line + "provider:\n  name: openfaas\nfunctions:\n  f:\n    image: i\n"
    assert parse(text).version == expected


@pytest.mark.parametrize("version", ["2.0", "1", "1.00"], ids=["two", "integer", "padded"])
def test_parse_stack_with_other_version_raises(version):
    err = error_of(HEAD.replace("version: 1.0", f"version: {version}") + "  f:\n    image: i\n")
    assert (err.line, err.field) == (1, "version")
    assert f"unsupported version '{version}'" in err.problem


@pytest.mark.parametrize("name", ["openfaas", "faas"], ids=["current", "legacy"])
def test_parse_stack_accepts_provider_names(name):
    stack = parse(HEAD.replace("name: openfaas", f"name: {name}") + "  f:\n    image: i\n")
    assert stack.provider_name == name


def test_parse_stack_with_unknown_provider_name_raises():
    err = error_of(HEAD.replace("name: openfaas", "name: kubernetes") + "  f:\n    image: i\n")
    assert str(err) == (
        "stack.yml:3: provider.name: must be 'openfaas' (or legacy 'faas'), found 'kubernetes'"
    )


def test_parse_stack_without_provider_raises():
    err = error_of("functions:\n  f:\n    image: i\n")
    assert err.field == "provider" and "missing" in err.problem


def test_parse_stack_accepts_legacy_provider_network():
    text = "provider:\n  name: faas\n  network: func_functions\nfunctions:\n  f:\n    image: i\n"
    assert parse(text).gateway == ""


@pytest.mark.parametrize(
    "gateway",
    ["http://127.0.0.1:8080", "https://gw.example.com/", "gateway.openfaas:8080", "http://:8080"],
    ids=["http-ip-port", "https-host", "no-scheme", "empty-host-from-unset-var"],
)
def test_parse_stack_accepts_gateway_urls(gateway):
    assert (
        parse(HEAD.replace("http://127.0.0.1:8080", gateway) + "  f:\n    image: i\n").gateway
        == gateway
    )


@pytest.mark.parametrize(
    ("gateway", "fragment"),
    [
        ("<fill in your gateway URL>", "is not a URL"),
        ("ftp://gw:21", "must be an http:// or https:// URL"),
        ("http://gw:port", "invalid port"),
    ],
    ids=["placeholder", "ftp-scheme", "bad-port"],
)
def test_parse_stack_with_invalid_gateway_raises(gateway, fragment):
    err = error_of(HEAD.replace("http://127.0.0.1:8080", gateway) + "  f:\n    image: i\n")
    assert (err.line, err.field) == (4, "provider.gateway")
    assert fragment in err.problem


@pytest.mark.parametrize(
    "tail",
    ["", "\n", "  {}\n"],
    ids=["null", "blank-line", "empty-mapping"],
)
def test_parse_stack_without_functions_raises(tail):
    err = error_of(HEAD + tail)
    assert (err.line, err.field, err.problem) == (5, "functions", "no functions defined")


def test_parse_stack_with_functions_key_missing_raises():
    err = error_of("provider:\n  name: openfaas\n")
    assert (err.field, err.problem) == ("functions", "no functions defined")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "file is empty"),
        ("# only a comment\n", "file is empty"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ("just text\n", "expected a mapping at the top level"),
    ],
    ids=["empty", "comment-only", "list", "scalar"],
)
def test_parse_stack_with_wrong_document_shape_raises(text, problem):
    assert problem in error_of(text).problem


# --- YAML-level errors -----------------------------------------------------------------


def test_parse_stack_with_tab_after_colon_raises_naming_line_and_column():
    err = error_of(with_function("image: i\nenvironment:\n  read_timeout:\t60\n"))
    assert str(err) == "stack.yml:9: TAB character at column 20; YAML allows only spaces here"


def test_parse_stack_with_unclosed_quote_raises_with_line():
    err = error_of(with_function('image: "oops\n'))
    assert err.file == "stack.yml" and err.line is not None and err.line >= 7


def test_parse_stack_with_several_documents_raises():
    assert "single document" in error_of(with_function("image: i\n") + "---\nother: 1\n").problem


@pytest.mark.parametrize(
    ("text", "line", "field", "first_line"),
    [
        (HEAD + "  a:\n    image: i\n  a:\n    image: j\n", 8, "functions.a", 6),
        (with_function("image: i\nimage: j\n"), 8, "functions.fn.image", 7),
        (with_function("environment:\n  K: 1\n  K: 2\n"), 9, "functions.fn.environment.K", 8),
        ("provider:\n  name: openfaas\nprovider:\n  name: faas\nfunctions:\n  f:\n    image: i\n",
         3, "provider", 1),
    ],
    ids=["function-name", "function-field", "environment-key", "top-level"],
)  # fmt: skip
def test_parse_stack_with_duplicate_key_raises_naming_both_lines(text, line, field, first_line):
    err = error_of(text)
    key = field.rsplit(".", 1)[-1]
    assert (err.line, err.field) == (line, field)
    assert err.problem == (
        f"duplicate key {key!r} (first defined on line {first_line}, again on line {line})"
    )


def test_parse_stack_applies_yaml_merge_keys_with_explicit_keys_winning():
    text = HEAD + (
        "  a: &a\n    image: base\n    lang: python3-http\n    handler: ./a\n"
        "  b:\n    <<: *a\n    handler: ./b\n"
    )
    b = parse(text).functions["b"]
    assert (b.image, b.lang, b.handler) == ("base", "python3-http", "./b")


# --- unknown keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        (with_function("image: i\nannotation:\n  a: b\n"), "functions.fn.annotation",
         "unknown field 'annotation' (did you mean 'annotations'?)"),
        (with_function("image: i\ntimeout: 120\n"), "functions.fn.timeout",
         "unknown field 'timeout' (timeouts go under environment: as read_timeout, "
         "write_timeout, exec_timeout)"),
        (with_function("image: i\nimagePullPolicy: Always\n"), "functions.fn.imagePullPolicy",
         "unknown field 'imagePullPolicy' (not a faas-cli field; the platform sets the image "
         "pull policy)"),
        (HEAD + "  f:\n    image: i\nfuctions: {}\n", "fuctions",
         "unknown field 'fuctions' (did you mean 'functions'?)"),
        (HEAD.replace("  gateway:", "  gatway:") + "  f:\n    image: i\n", "provider.gatway",
         "unknown field 'gatway' (did you mean 'gateway'?)"),
        (with_function("image: i\nlimits:\n  memroy: 128Mi\n"), "functions.fn.limits.memroy",
         "unknown field 'memroy' (did you mean 'memory'?)"),
        (HEAD + "  f:\n    image: i\nconfiguration:\n  templates:\n    - name: t\n      src: x\n",
         "configuration.templates[0].src", "unknown field 'src' (did you mean 'source'?)"),
        (with_function("image: i\nzzz: 1\n"), "functions.fn.zzz",
         "unknown field 'zzz' (known fields: annotations, build_args, build_options, "
         "build_secrets, constraints, environment, environment_file, fprocess, handler, image, "
         "labels, lang, limits, namespace, platforms, readonly_root_filesystem, requests, "
         "secrets, skip_build)"),
    ],
    ids=["typo-annotation", "timeout-hint", "image-pull-policy-hint", "top-level-typo",
         "provider-typo", "limits-typo", "template-typo", "no-close-match-lists-fields"],
)  # fmt: skip
def test_parse_stack_with_unknown_field_raises_with_suggestion(text, field, problem):
    err = error_of(text)
    assert (err.field, err.problem) == (field, problem)


# --- scalar and field types ------------------------------------------------------------

# Values as go-yaml v3 puts them into a Go map[string]string: the text as written.
SCALARS = [
    ("off", "off"), ("on", "on"), ("True", "True"), ("true", "true"), ("no", "no"),
    ("8", "8"), ("0.25", "0.25"), ("1e3", "1e3"), ("010", "010"), ("0x1F", "0x1F"),
    ("2020-01-01", "2020-01-01"), ("'quoted'", "quoted"), ('"a: b"', "a: b"), ("''", ""),
    ("", ""), ("~", ""), ("null", ""), ('"null"', "null"), ("16s  # comment", "16s"),
]  # fmt: skip


@pytest.mark.parametrize(("written", "expected"), SCALARS, ids=[w or "empty" for w, _ in SCALARS])
@pytest.mark.parametrize("mapping", ["environment", "labels", "annotations", "build_args"])
def test_parse_stack_map_values_keep_yaml_text_as_written(mapping, written, expected):
    fn = one_function(f"image: i\n{mapping}:\n  KEY: {written}\n")
    assert getattr(fn, mapping) == {"KEY": expected}


@pytest.mark.parametrize(
    ("written", "expected"),
    [("true", True), ("True", True), ("yes", True), ("on", True), ("false", False),
     ("off", False), ("", False)],
    ids=["true", "True", "yes", "on", "false", "off", "empty"],
)  # fmt: skip
@pytest.mark.parametrize("flag", ["skip_build", "readonly_root_filesystem"])
def test_parse_stack_bool_fields_accept_go_yaml_spellings(flag, written, expected):
    assert getattr(one_function(f"image: i\n{flag}: {written}\n"), flag) is expected


def test_parse_stack_bool_field_with_other_text_raises():
    err = error_of(with_function("image: i\nskip_build: maybe\n"))
    assert str(err) == "stack.yml:8: functions.fn.skip_build: expected true or false, found 'maybe'"


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ("secrets: one\n", "secrets", "expected a list of strings, found 'one'"),
        ("constraints:\n  a: b\n", "constraints", "expected a list of strings, found a mapping"),
        ("environment_file:\n  - [a]\n", "environment_file[0]", "expected a string, found a list"),
        ("build_options:\n  -\n", "build_options[0]", "empty entry"),
        ("environment:\n  - A=1\n", "environment", "expected a mapping, found a list"),
        ("labels:\n  a:\n    b: c\n", "labels.a", "expected a string, found a mapping"),
        ("image: [a]\n", "image", "expected a string, found a list"),
        ("limits: 128Mi\n", "limits", "expected a mapping, found '128Mi'"),
    ],
    ids=["secrets-string", "constraints-mapping", "env-file-nested-list", "null-list-entry",
         "environment-list", "label-nested-map", "image-list", "limits-scalar"],
)  # fmt: skip
def test_parse_stack_with_wrong_field_type_raises_naming_field(body, field, problem):
    err = error_of(with_function(body))
    assert (err.field, err.problem) == (f"functions.fn.{field}", problem)
    assert err.line is not None and err.line >= 7


def test_parse_stack_reads_every_function_field():
    fn = one_function(
        """\
        lang: python3-http
        handler: ./fn
        image: reg/fn:1
        fprocess: python index.py
        environment: {A: "1"}
        environment_file: [env.yml]
        secrets: [s1, s2]
        labels: {com.openfaas.scale.min: 1}
        annotations: {topic: t}
        limits: {memory: 128Mi, cpu: 0.5}
        requests: {memory: 64}
        constraints: ["node.platform.os == linux"]
        build_args: {TEST_ENABLED: false}
        build_options: [dev]
        build_secrets: {token: ./token.txt}
        readonly_root_filesystem: true
        skip_build: false
        namespace: staging
        platforms: linux/amd64,linux/arm64
        """
    )
    assert fn == StackFunction(
        name="fn", lang="python3-http", handler="./fn", image="reg/fn:1",
        fprocess="python index.py", environment={"A": "1"}, environment_file=["env.yml"],
        secrets=["s1", "s2"], labels={"com.openfaas.scale.min": "1"},
        annotations={"topic": "t"}, limits=Resources(memory="128Mi", cpu="0.5"),
        requests=Resources(memory="64", cpu=""), constraints=["node.platform.os == linux"],
        build_args={"TEST_ENABLED": "false"}, build_options=["dev"],
        build_secrets={"token": "./token.txt"}, readonly_root_filesystem=True, skip_build=False,
        namespace="staging", platforms="linux/amd64,linux/arm64", line=6,
    )  # fmt: skip


def test_parse_stack_null_fields_mean_empty():
    fn = one_function("image: i\nenvironment:\nsecrets:\nlimits:\nlang:\n")
    assert (fn.environment, fn.secrets, fn.limits, fn.lang) == ({}, [], None, "")


# --- functions: names, handlers, langs ---------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["url_ping", "greeter--say-hello", "send.notification", "UPPER", "123"],
    ids=["underscore", "double-dash", "dot", "upper-case", "digits"],
)
def test_parse_stack_accepts_function_names_real_files_use(name):
    assert name in parse(HEAD + f"  {name}:\n    image: i\n").functions


@pytest.mark.parametrize(
    "name",
    ["a/b", "'a b'", "..", "'a\\b'", "''"],
    ids=["slash", "space", "dot-dot", "backslash", "empty"],
)
def test_parse_stack_with_unusable_function_name_raises(name):
    err = error_of(HEAD + f"  {name}:\n    image: i\n")
    assert (err.line, err.field) == (6, "functions")
    assert "function name" in err.problem


@pytest.mark.parametrize("handler", ["./fn", ".", "./", "fn/sub", "../shared"], ids=str)
def test_parse_stack_keeps_handler_as_written(handler):
    assert one_function(f"lang: go\nhandler: {handler}\nimage: i\n").handler == handler


def test_parse_stack_with_command_as_handler_raises():
    err = error_of(with_function("lang: nodejs\nhandler: node main.js\nimage: i\n"))
    assert str(err) == (
        "stack.yml:8: functions.fn.handler: handler must be a folder path, not a command "
        "('node main.js')"
    )


@pytest.mark.parametrize(
    ("body", "lang", "handler"),
    [
        ("image: functions/figlet:latest\n", "", ""),
        ("lang: dockerfile\nimage: functions/alpine\nfprocess: cat\n", "dockerfile", ""),
        ("skip_build: true\nimage: ghcr.io/x/y:1\n", "", ""),
    ],
    ids=["image-only-store-function", "dockerfile-without-handler", "skip-build"],
)
def test_parse_stack_accepts_functions_without_handler(body, lang, handler):
    fn = one_function(body)
    assert (fn.lang, fn.handler) == (lang, handler)


@pytest.mark.parametrize(
    ("lang", "expected"),
    [("dockerfile", True), ("Dockerfile", True), ("python3-http", False), ("", False)],
    ids=["lower", "capitalised", "template", "none"],
)
def test_stack_function_is_dockerfile_ignores_case(lang, expected):
    assert StackFunction(name="f", lang=lang).is_dockerfile is expected


# --- configuration ---------------------------------------------------------------------


def test_parse_stack_reads_templates_and_copy_paths():
    text = (
        HEAD
        + "  f:\n    image: i\n"
        + textwrap.dedent(
            """\
        configuration:
          templates:
          - name: python3-http
            source: https://github.com/openfaas/python-flask-template#v1
          - name: golang-middleware
          copy:
            - ./sdk
            - ./common
          copy_extra_paths:
            - ./common
            - ./data
        """
        )
    )
    stack = parse(text)
    assert [(t.name, t.source) for t in stack.templates] == [
        ("python3-http", "https://github.com/openfaas/python-flask-template#v1"),
        ("golang-middleware", ""),
    ]
    assert stack.copy == ["./sdk", "./common", "./data"]


def test_parse_stack_template_without_name_raises():
    err = error_of(HEAD + "  f:\n    image: i\nconfiguration:\n  templates:\n    - source: x\n")
    assert (err.field, err.problem) == ("configuration.templates[0].name", "missing template name")


# --- environment substitution ----------------------------------------------------------


def test_parse_stack_substitutes_env_before_yaml():
    text = with_function("image: ${REGISTRY:-localhost:5000/otp}:${TAG}\nenvironment:\n  A: ${A}\n")
    fn = parse(text, {"TAG": "1.2"}).functions["fn"]
    assert (fn.image, fn.environment) == ("localhost:5000/otp:1.2", {"A": ""})


def test_parse_stack_substituted_value_can_change_yaml_structure():
    # faas-cli substitutes raw text, so a value carrying YAML syntax is YAML: the same here.
    fn = parse(with_function("image: i\nsecrets: ${LIST}\n"), {"LIST": "[a, b]"}).functions["fn"]
    assert fn.secrets == ["a", "b"]


def test_parse_stack_with_unterminated_substitution_raises_with_line():
    err = error_of(with_function("image: ${REGISTRY\n"))
    assert str(err) == (
        "stack.yml:7: bad substitution at column 12: unterminated '${': no '}' before the end "
        "of the line"
    )


# --- StackError ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "field", "expected"),
    [(3, "functions.a", "s.yml:3: functions.a: bad"), (None, "functions", "s.yml: functions: bad"),
     (7, None, "s.yml:7: bad"), (None, None, "s.yml: bad")],
    ids=["all-parts", "no-line", "no-field", "file-only"],
)  # fmt: skip
def test_stack_error_message_omits_unknown_parts(line, field, expected):
    err = StackError("s.yml", "bad", line=line, field=field)
    assert str(err) == expected
    assert isinstance(err, ValueError)


# --- load_stack ------------------------------------------------------------------------


def test_load_stack_reads_crlf_file_and_names_it(tmp_path):
    path = tmp_path / "stack.yml"
    path.write_bytes(with_function("image: ${IMG}\n").replace("\n", "\r\n").encode())
    stack = load_stack(path, {"IMG": "x:1"})
    assert (stack.path, stack.functions["fn"].image) == (str(path), "x:1")


def test_load_stack_with_missing_file_raises_naming_it(tmp_path):
    with pytest.raises(StackError) as caught:
        load_stack(tmp_path / "nope.yml", {})
    assert caught.value.file == str(tmp_path / "nope.yml") and "cannot read" in str(caught.value)


def test_load_stack_with_non_utf8_file_raises(tmp_path):
    path = tmp_path / "stack.yml"
    path.write_bytes(b"provider:\n  name: \xff\n")
    with pytest.raises(StackError, match="not UTF-8"):
        load_stack(path, {})


# --- filter_functions and check_languages ------------------------------------------------

THREE = (
    HEAD
    + "  a:\n    image: a\n  b:\n    lang: go\n    handler: ./b\n    image: b\n  c:\n    image: c\n"
)


def test_filter_functions_keeps_named_functions_in_file_order():
    assert list(filter_functions(parse(THREE), ["c", "a"]).functions) == ["a", "c"]


def test_filter_functions_with_unknown_name_raises_naming_it():
    with pytest.raises(StackError) as caught:
        filter_functions(parse(THREE), ["a", "x"])
    assert str(caught.value) == "stack.yml: functions: no function named 'x' (available: a, b, c)"


def test_filter_functions_with_no_names_raises():
    with pytest.raises(StackError, match="no function names given"):
        filter_functions(parse(THREE), [])


def test_check_languages_with_unknown_lang_raises_listing_available():
    with pytest.raises(StackError) as caught:
        check_languages(parse(THREE), ["python3-http", "node20"])
    assert str(caught.value) == (
        "stack.yml:8: functions.b.lang: unknown language 'go' (available: node20, python3-http)"
    )


@pytest.mark.parametrize(
    "body",
    ["image: i\n", "lang: nope\nskip_build: true\nimage: i\n", "lang: Dockerfile\nhandler: .\n"],
    ids=["no-lang", "skip-build", "dockerfile-needs-no-template"],
)
def test_check_languages_skips_functions_that_need_no_template(body):
    check_languages(parse(with_function(body)), [])


# --- resolve_environment ---------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def env_stack(files: str) -> tuple[Stack, StackFunction]:
    stack = parse(
        with_function(
            f"image: i\nenvironment:\n  A: stack\n  B: stack\nenvironment_file: {files}\n"
        )
    )
    return stack, stack.functions["fn"]


def test_resolve_environment_later_files_override_stack_values(tmp_path):
    write(tmp_path / "one.yml", "environment:\n  B: one\n  C: one\n")
    write(tmp_path / "conf/two.yml", "environment:\n  C: two\n  D: off\n")
    stack, fn = env_stack("[one.yml, conf/two.yml]")
    env = resolve_environment(stack, fn, tmp_path)
    assert env == {"A": "stack", "B": "one", "C": "two", "D": "off"}


def test_resolve_environment_with_empty_file_changes_nothing(tmp_path):
    write(tmp_path / "empty.yml", "# nothing yet\n")
    stack, fn = env_stack("[empty.yml]")
    assert resolve_environment(stack, fn, tmp_path) == {"A": "stack", "B": "stack"}


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        ("environment:\n  A: 1\n  A: 2\n", 3, "duplicate key 'A'"),
        ("environment:\n  A:\t1\n", 2, "TAB character"),
        ("enviroment:\n  A: 1\n", 1, "did you mean 'environment'?"),
        ("environment: [A]\n", 1, "expected a mapping"),
    ],
    ids=["duplicate", "tab", "typo", "list"],
)
def test_resolve_environment_with_bad_env_file_names_file_and_line(
    tmp_path, content, line, fragment
):
    write(tmp_path / "env.yml", content)
    stack, fn = env_stack("[env.yml]")
    with pytest.raises(StackError) as caught:
        resolve_environment(stack, fn, tmp_path)
    assert (caught.value.file, caught.value.line) == (str(tmp_path / "env.yml"), line)
    assert fragment in caught.value.problem


@pytest.mark.parametrize(
    ("relative", "fragment"),
    [("missing.yml", "No such file"), ("../outside.yml", "outside the project"),
     ("/etc/hostname", "absolute path"), ("link.yml", "symlink to outside")],
    ids=["missing", "parent-escape", "absolute", "symlink-out"],
)  # fmt: skip
def test_resolve_environment_refuses_unreadable_or_outside_files(tmp_path, relative, fragment):
    project = tmp_path / "project"
    project.mkdir()
    write(tmp_path / "outside.yml", "environment:\n  SECRET: x\n")
    os.symlink(tmp_path / "outside.yml", project / "link.yml")
    stack, fn = env_stack(f"[{relative}]")
    with pytest.raises(StackError) as caught:
        resolve_environment(stack, fn, project)
    err = caught.value
    assert (err.file, err.line, err.field) == ("stack.yml", 6, "functions.fn.environment_file")
    assert relative in err.problem and fragment in err.problem


# --- resolve_project_path --------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "allow_root", "expected"),
    [("sub", False, "sub"), ("./sub/../sub/f", False, "sub/f"), (".", True, ""),
     ("inner-link", False, "inner-link")],
    ids=["folder", "normalised", "root-when-allowed", "symlink-inside-kept"],
)  # fmt: skip
def test_resolve_project_path_returns_lexical_path_inside(tmp_path, relative, allow_root, expected):
    (tmp_path / "sub").mkdir()
    os.symlink(tmp_path / "sub", tmp_path / "inner-link")
    got = resolve_project_path(tmp_path, relative, allow_root=allow_root)
    assert got == Path(os.path.realpath(tmp_path), expected)


@pytest.mark.parametrize(
    ("relative", "fragment"),
    [("", "empty path"), ("/etc", "absolute"), ("C:\\x", "absolute"), ("..", "outside"),
     ("sub/../../x", "outside"), (".", "whole project"), ("./", "whole project"),
     ("out-link/f", "symlink to outside")],
    ids=["empty", "posix-absolute", "windows-drive", "parent", "nested-escape", "root",
         "root-slash", "through-symlink"],
)  # fmt: skip
def test_resolve_project_path_refuses_escapes(tmp_path, relative, fragment):
    project = tmp_path / "p"
    (project / "sub").mkdir(parents=True)
    os.symlink(tmp_path, project / "out-link")
    with pytest.raises(ValueError, match=fragment):
        resolve_project_path(project, relative)


# --- hostile input ---------------------------------------------------------------------


def test_parse_stack_with_exponential_merge_aliases_finishes():
    # Each mapping merges the previous one twice: 2**40 lookups unless merges are cached.
    chain = ["&m0 {K: v}"] + [f"&m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}" for i in range(1, 41)]
    fn = one_function(f"image: i\nenvironment:\n  <<: [{', '.join(chain)}]\n")
    assert fn.environment == {"K": "v"}


def test_parse_stack_with_hostile_yaml_nesting_raises_stack_error():
    err = error_of(with_function("image: i\nsecrets: " + "[" * 5000 + "]" * 5000 + "\n"))
    assert (err.line, err.problem) == (None, "YAML nested too deeply")


def test_parse_stack_with_self_merging_alias_raises():
    err = error_of(with_function("image: i\nenvironment: &e\n  <<: *e\n"))
    assert err.problem == "mapping merges itself ('<<' through its own alias)"
