"""faas-cli ``stack.yml`` files: a strict, line-aware parser.

Reads the same files faas-cli reads (``openfaas/go-sdk`` ``stack/schema.go``) and gives
back frozen records. The pipeline is faas-cli's: environment substitution on the raw
text (:mod:`sdk.envsubst`), then YAML. Where faas-cli is lax we are strict on purpose,
because a stack file here comes from a user's git push and a silent misreading deploys
the wrong thing:

* duplicate mapping keys are errors naming both lines (PyYAML keeps the last silently);
* unknown keys are errors with a did-you-mean (faas-cli ignores them);
* every error is a :class:`StackError` reading ``<file>:<line>: <field>: <problem>``.

Scalars are read as go-yaml v3 reads them into Go strings: the text as written, not a
YAML 1.1 value. So ``GO111MODULE: off`` is ``"off"``, ``RAW_BODY: True`` is ``"True"``,
``scale.min: 1`` is ``"1"``, ``0.25`` stays ``"0.25"`` and an empty value is ``""``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sdk.envsubst import SubstitutionError, substitute
from sdk.openfaas import Resources

__all__ = [
    "StackError",
    "TemplateSource",
    "StackFunction",
    "Stack",
    "parse_stack",
    "load_stack",
    "filter_functions",
    "check_languages",
    "resolve_environment",
    "resolve_project_path",
]

_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# go-yaml v3 decodes these into a Go bool field (YAML 1.2 true/false, plus the YAML 1.1
# spellings it still accepts for typed bools: decode.go, "compatibility with the 1.1 spec").
_TRUE = {"true", "True", "TRUE", "y", "Y", "yes", "Yes", "YES", "on", "On", "ON"}
_FALSE = {"false", "False", "FALSE", "n", "N", "no", "No", "NO", "off", "Off", "OFF"}

_TOP_FIELDS = ("version", "provider", "functions", "configuration")
_PROVIDER_FIELDS = ("name", "gateway", "network")  # network: pre-2019 files, ignored
_PROVIDER_NAMES = ("openfaas", "faas")  # faas: the legacy name older faas-cli accepted
_CONFIG_FIELDS = ("templates", "copy", "copy_extra_paths")
_TEMPLATE_FIELDS = ("name", "source")
_RESOURCE_FIELDS = ("memory", "cpu")
_FUNCTION_FIELDS = (
    "lang", "handler", "image", "fprocess", "environment", "environment_file", "secrets",
    "skip_build", "constraints", "labels", "limits", "requests", "readonly_root_filesystem",
    "build_options", "annotations", "namespace", "build_args", "platforms", "build_secrets",
)  # fmt: skip
# Extra advice for unknown keys people really write (see the stack.yml corpus).
_HINTS = {
    "timeout": "timeouts go under environment: as read_timeout, write_timeout, exec_timeout",
    "imagePullPolicy": "not a faas-cli field; the platform sets the image pull policy",
}


class StackError(ValueError):
    """A stack or environment file is invalid.

    ``str(err)`` is ``"<file>:<line>: <field>: <problem>"``, leaving out what is unknown,
    e.g. ``stack.yml:45: functions.py-long.annotation: unknown field 'annotation' (did you
    mean 'annotations'?)``.
    """

    def __init__(
        self, file: str, problem: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.problem = problem
        location = file if line is None else f"{file}:{line}"
        super().__init__(": ".join(p for p in (location, field, problem) if p))


@dataclass(frozen=True)
class TemplateSource:
    """One ``configuration.templates`` entry; ``source`` empty means the template store."""

    name: str
    source: str = ""


@dataclass(frozen=True)
class StackFunction:
    """One entry of ``functions:``; strings are as written (after substitution)."""

    name: str
    lang: str = ""  # kept as written: "Dockerfile" occurs in real files
    handler: str = ""  # folder, as written: "./fn", ".", "./"
    image: str = ""
    fprocess: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    environment_file: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    limits: Resources | None = None
    requests: Resources | None = None
    constraints: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    build_options: list[str] = field(default_factory=list)
    build_secrets: dict[str, str] = field(default_factory=dict)
    readonly_root_filesystem: bool = False
    skip_build: bool = False
    namespace: str = ""
    platforms: str = ""
    line: int = 0  # line of the function's key in the stack file

    @property
    def is_dockerfile(self) -> bool:
        """True for ``lang: dockerfile`` in any case: the handler folder is the context."""
        return self.lang.lower() == "dockerfile"


@dataclass(frozen=True)
class Stack:
    """A parsed stack file; ``functions`` keeps file order."""

    path: str
    version: str
    provider_name: str
    gateway: str
    templates: list[TemplateSource]
    copy: list[str]
    functions: dict[str, StackFunction]


class _Reader:
    """Typed access to composed YAML nodes, raising :class:`StackError` with line numbers."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.resolved: dict[int, dict[str, tuple[Node, Node]]] = {}  # merge results by node
        self.resolving: set[int] = set()  # merges in progress, to refuse self-merges

    def fail(self, node: Node | None, path: str | None, problem: str) -> StackError:
        line = node.start_mark.line + 1 if node is not None else None
        return StackError(self.filename, problem, line=line, field=path)

    def compose(self, text: str) -> Node | None:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            problem = ", ".join(p for p in (err.context, err.problem) if p) or "invalid YAML"
            if "'\\t'" in problem and mark is not None:
                problem = f"TAB character at column {mark.column + 1}; YAML allows only spaces here"
            raise StackError(self.filename, problem, line=mark.line + 1 if mark else None) from err
        except yaml.YAMLError as err:
            raise StackError(self.filename, f"invalid YAML: {err}") from err
        except RecursionError:  # PyYAML composes recursively; hostile nesting must not crash
            raise StackError(self.filename, "YAML nested too deeply") from None
        if root is not None:
            self.check_duplicates(root)
        return root

    def check_duplicates(self, root: Node) -> None:
        seen: set[int] = set()
        stack: list[tuple[Node, str]] = [(root, "")]
        while stack:
            node, path = stack.pop()
            if id(node) in seen:  # an alias: already checked
                continue
            seen.add(id(node))
            if isinstance(node, SequenceNode):
                stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
            elif isinstance(node, MappingNode):
                first: dict[str, Node] = {}
                for key, value in node.value:
                    name = self.key(key, path)
                    child = f"{path}.{name}" if path else name
                    if key.tag != _MERGE_TAG and name in first:
                        raise self.fail(
                            key,
                            child,
                            f"duplicate key {name!r} (first defined on line "
                            f"{first[name].start_mark.line + 1}, again on line "
                            f"{key.start_mark.line + 1})",
                        )
                    first.setdefault(name, key)
                    stack.append((value, child))

    def key(self, node: Node, path: str) -> str:
        if not isinstance(node, ScalarNode):
            raise self.fail(node, path or None, "mapping keys must be plain strings")
        return "" if node.tag == _NULL_TAG else str(node.value)

    def entries(self, node: Node, path: str) -> dict[str, tuple[Node, Node]]:
        """Key -> (key node, value node); ``<<`` merges apply, explicit keys win."""
        if _is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            raise self.fail(node, path, f"expected a mapping, found {_kind(node)}")
        if id(node) in self.resolved:
            return self.resolved[id(node)]
        if id(node) in self.resolving:
            raise self.fail(node, path, "mapping merges itself ('<<' through its own alias)")
        self.resolving.add(id(node))
        merged: dict[str, tuple[Node, Node]] = {}
        own: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                sources = value.value if isinstance(value, SequenceNode) else [value]
                for source in sources:
                    for name, pair in self.entries(source, path).items():
                        merged.setdefault(name, pair)
            else:
                own[self.key(key, path)] = (key, value)
        # Cached per node: aliases can merge one mapping many times, and an untrusted
        # file must not make that exponential.
        self.resolved[id(node)] = {**merged, **own}
        self.resolving.discard(id(node))
        return self.resolved[id(node)]

    def fields(self, node: Node, path: str, known: Collection[str]) -> dict[str, tuple[Node, Node]]:
        """Like :meth:`entries`, rejecting keys not in ``known`` with a suggestion."""
        found = self.entries(node, path)
        for name, (key, _) in found.items():
            if name not in known:
                raise self.fail(key, f"{path}.{name}" if path else name, _unknown(name, known))
        return found

    def string(self, node: Node, path: str) -> str:
        if _is_null(node):
            return ""
        if not isinstance(node, ScalarNode):
            raise self.fail(node, path, f"expected a string, found {_kind(node)}")
        # node.value is the text as written: go-yaml v3 decodes any scalar into a Go
        # string this way, so `off` stays "off" and `1.0` stays "1.0".
        return str(node.value)

    def boolean(self, node: Node, path: str) -> bool:
        text = self.string(node, path)
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        if text == "":
            return False
        raise self.fail(node, path, f"expected true or false, found {text!r}")

    def strings(self, node: Node, path: str) -> list[str]:
        if _is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            raise self.fail(node, path, f"expected a list of strings, found {_kind(node)}")
        out = []
        for i, item in enumerate(node.value):
            value = self.string(item, f"{path}[{i}]")
            if not value:
                raise self.fail(item, f"{path}[{i}]", "empty entry")
            out.append(value)
        return out

    def string_map(self, node: Node, path: str) -> dict[str, str]:
        return {
            name: self.string(value, f"{path}.{name}")
            for name, (_, value) in self.entries(node, path).items()
        }

    def resources(self, node: Node, path: str) -> Resources | None:
        if _is_null(node):
            return None
        found = self.fields(node, path, _RESOURCE_FIELDS)
        values = {name: self.string(v, f"{path}.{name}") for name, (_, v) in found.items()}
        return Resources(memory=values.get("memory", ""), cpu=values.get("cpu", ""))


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    text = str(node.value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _unknown(name: str, known: Collection[str]) -> str:
    problem = f"unknown field {name!r}"
    if name in _HINTS:
        return f"{problem} ({_HINTS[name]})"
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        return f"{problem} (did you mean {close[0]!r}?)"
    return f"{problem} (known fields: {', '.join(sorted(known))})"


def _gateway_problem(url: str) -> str | None:
    """Why ``url`` cannot be a gateway URL, or None; faas-cli adds ``http://`` if missing."""
    if not url:
        return None
    if any(ch.isspace() or ch in '<>"{}|\\^`' for ch in url):
        return f"{url!r} is not a URL (expected e.g. http://127.0.0.1:8080)"
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return f"{url!r} has an invalid port"
    if parts.scheme not in ("http", "https"):
        return f"{url!r} must be an http:// or https:// URL"
    return None


def _function_name_problem(name: str) -> str | None:
    # Real, valid files use '_', '--' and '.' in names, so only what breaks a build
    # folder or a URL is refused here; DNS-1123 checks belong to the deploy step.
    if not name:
        return "function name is empty"
    if name in (".", "..") or any(ch.isspace() or ch in "/\\" for ch in name):
        return f"invalid function name {name!r}: no '/', '\\', whitespace, '.' or '..'"
    return None


def _read_function(r: _Reader, name: str, key: Node, node: Node) -> StackFunction:
    path = f"functions.{name}"
    if not isinstance(node, MappingNode):
        raise r.fail(node, path, f"expected a mapping of function fields, found {_kind(node)}")
    f = {k: v for k, (_, v) in r.fields(node, path, _FUNCTION_FIELDS).items()}

    def text(k: str) -> str:
        return r.string(f[k], f"{path}.{k}") if k in f else ""

    def items(k: str) -> list[str]:
        return r.strings(f[k], f"{path}.{k}") if k in f else []

    def mapping(k: str) -> dict[str, str]:
        return r.string_map(f[k], f"{path}.{k}") if k in f else {}

    def flag(k: str) -> bool:
        return r.boolean(f[k], f"{path}.{k}") if k in f else False

    def resources(k: str) -> Resources | None:
        return r.resources(f[k], f"{path}.{k}") if k in f else None

    handler = text("handler")
    if any(ch.isspace() for ch in handler):
        raise r.fail(
            f["handler"], f"{path}.handler",
            f"handler must be a folder path, not a command ({handler!r})",
        )  # fmt: skip
    return StackFunction(
        name=name,
        lang=text("lang"),
        handler=handler,
        image=text("image"),
        fprocess=text("fprocess"),
        environment=mapping("environment"),
        environment_file=items("environment_file"),
        secrets=items("secrets"),
        labels=mapping("labels"),
        annotations=mapping("annotations"),
        limits=resources("limits"),
        requests=resources("requests"),
        constraints=items("constraints"),
        build_args=mapping("build_args"),
        build_options=items("build_options"),
        build_secrets=mapping("build_secrets"),
        readonly_root_filesystem=flag("readonly_root_filesystem"),
        skip_build=flag("skip_build"),
        namespace=text("namespace"),
        platforms=text("platforms"),
        line=key.start_mark.line + 1,
    )


def _read_provider(r: _Reader, top: dict[str, tuple[Node, Node]]) -> tuple[str, str]:
    if "provider" not in top:
        raise r.fail(None, "provider", "missing (add provider: {name: openfaas})")
    key, node = top["provider"]
    provider = r.fields(node, "provider", _PROVIDER_FIELDS)
    if "name" not in provider:
        raise r.fail(key, "provider.name", "missing (expected 'openfaas')")
    name_node = provider["name"][1]
    name = r.string(name_node, "provider.name")
    if name not in _PROVIDER_NAMES:
        raise r.fail(
            name_node, "provider.name", f"must be 'openfaas' (or legacy 'faas'), found {name!r}"
        )
    gateway = ""
    if "gateway" in provider:
        gateway_node = provider["gateway"][1]
        gateway = r.string(gateway_node, "provider.gateway")
        problem = _gateway_problem(gateway)
        if problem:
            raise r.fail(gateway_node, "provider.gateway", problem)
    return name, gateway


def _read_configuration(
    r: _Reader, top: dict[str, tuple[Node, Node]]
) -> tuple[list[TemplateSource], list[str]]:
    if "configuration" not in top:
        return [], []
    config = r.fields(top["configuration"][1], "configuration", _CONFIG_FIELDS)
    templates: list[TemplateSource] = []
    if "templates" in config:
        node = config["templates"][1]
        if not isinstance(node, SequenceNode) and not _is_null(node):
            raise r.fail(node, "configuration.templates", f"expected a list, found {_kind(node)}")
        for i, item in enumerate(node.value if isinstance(node, SequenceNode) else []):
            path = f"configuration.templates[{i}]"
            found = r.fields(item, path, _TEMPLATE_FIELDS)
            entry = {k: r.string(v, f"{path}.{k}") for k, (_, v) in found.items()}
            if not entry.get("name"):
                raise r.fail(item, f"{path}.name", "missing template name")
            templates.append(TemplateSource(name=entry["name"], source=entry.get("source", "")))
    copy: list[str] = []
    # copy_extra_paths is the older spelling of copy (faas-cli CopyExtraPaths).
    for key in ("copy", "copy_extra_paths"):
        if key in config:
            copy += [p for p in r.strings(config[key][1], f"configuration.{key}") if p not in copy]
    return templates, copy


def parse_stack(text: str, *, filename: str, env: Mapping[str, str]) -> Stack:
    """Parse stack file ``text`` (named ``filename`` in errors) after substituting ``env``.

    ``env`` is the variable mapping for ``${VAR}`` forms; pass ``{}`` to make every
    ``${VAR}`` empty and every ``${VAR:-default}`` its default. Raises :class:`StackError`.
    """
    r = _Reader(filename)
    try:
        text = substitute(text, env)
    except SubstitutionError as err:
        raise StackError(
            filename, f"bad substitution at column {err.column}: {err.problem}", line=err.line
        ) from err
    root = r.compose(text)
    if root is None:
        raise r.fail(None, None, "file is empty (expected provider: and functions:)")
    if not isinstance(root, MappingNode):
        raise r.fail(root, None, f"expected a mapping at the top level, found {_kind(root)}")
    top = r.fields(root, "", _TOP_FIELDS)
    version = r.string(top["version"][1], "version") if "version" in top else ""
    if version not in ("", "1.0"):
        raise r.fail(top["version"][1], "version", f"unsupported version {version!r} (only '1.0')")
    provider_name, gateway = _read_provider(r, top)
    if "functions" not in top:
        raise r.fail(None, "functions", "no functions defined")
    functions_key, functions_node = top["functions"]
    entries = r.entries(functions_node, "functions")
    if not entries:
        raise r.fail(functions_key, "functions", "no functions defined")
    functions = {}
    for name, (key, node) in entries.items():
        problem = _function_name_problem(name)
        if problem:
            raise r.fail(key, "functions", problem)
        functions[name] = _read_function(r, name, key, node)
    templates, copy = _read_configuration(r, top)
    return Stack(filename, version, provider_name, gateway, templates, copy, functions)


def load_stack(path: str | Path, env: Mapping[str, str]) -> Stack:
    """Read and parse the stack file at ``path``; see :func:`parse_stack`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise StackError(str(path), f"not UTF-8 text ({err.reason})") from err
    except OSError as err:
        raise StackError(str(path), f"cannot read: {err.strerror or err}") from err
    return parse_stack(text, filename=str(path), env=env)


def filter_functions(stack: Stack, names: Iterable[str]) -> Stack:
    """Return ``stack`` keeping only ``names`` (in file order); unknown names raise."""
    wanted = list(names)
    if not wanted:
        raise StackError(stack.path, "no function names given", field="functions")
    unknown = [n for n in wanted if n not in stack.functions]
    if unknown:
        raise StackError(
            stack.path,
            f"no function named {', '.join(map(repr, unknown))} "
            f"(available: {', '.join(stack.functions)})",
            field="functions",
        )
    kept = {n: fn for n, fn in stack.functions.items() if n in wanted}
    return replace(stack, functions=kept)


def check_languages(stack: Stack, known: Collection[str]) -> None:
    """Raise :class:`StackError` for the first function whose ``lang`` is not in ``known``.

    Functions with ``skip_build`` or no ``lang`` are not built and so not checked;
    ``dockerfile`` needs no template and is always known.
    """
    for fn in stack.functions.values():
        if fn.skip_build or not fn.lang or fn.is_dockerfile or fn.lang in known:
            continue
        available = ", ".join(sorted(known)) or "none"
        raise StackError(
            stack.path,
            f"unknown language {fn.lang!r} (available: {available})",
            line=fn.line,
            field=f"functions.{fn.name}.lang",
        )


def resolve_project_path(root: Path, relative: str, *, allow_root: bool = False) -> Path:
    """Return ``root/relative`` normalised, if it stays inside ``root``; else ValueError.

    Refuses empty and absolute paths, ``..`` escapes, and symlinks whose target lies
    outside ``root`` (the repository is untrusted). ``allow_root`` permits ``.`` itself.
    The result is lexical (symlinks inside ``root`` are kept, not resolved).
    """
    if not relative:
        raise ValueError("empty path")
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).anchor:
        raise ValueError(f"{relative!r} is an absolute path; use a path inside the project")
    base = os.path.realpath(root)
    lexical = os.path.normpath(os.path.join(base, relative))
    if not _within(base, lexical):
        raise ValueError(f"{relative!r} points outside the project")
    if not _within(base, os.path.realpath(lexical)):
        raise ValueError(f"{relative!r} is a symlink to outside the project")
    if lexical == base and not allow_root:
        raise ValueError(f"{relative!r} is the whole project; name a folder inside it")
    return Path(lexical)


def _within(base: str, path: str) -> bool:
    return os.path.commonpath([base, path]) == base


def resolve_environment(stack: Stack, fn: StackFunction, base_dir: Path) -> dict[str, str]:
    """``fn.environment`` overlaid by each ``environment_file`` in order (later wins).

    Env files are YAML with one top-level ``environment:`` map, read relative to
    ``base_dir`` and never from outside it; values are not substituted (faas-cli
    substitutes only the stack file). Errors name the env file and line.
    """
    merged = dict(fn.environment)
    field_path = f"functions.{fn.name}.environment_file"
    for relative in fn.environment_file:
        try:
            path = resolve_project_path(base_dir, relative)
            text = path.read_text(encoding="utf-8")
        except (ValueError, OSError) as err:
            problem = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise StackError(
                stack.path, f"{relative!r}: {problem}", line=fn.line, field=field_path
            ) from err
        r = _Reader(str(base_dir / relative))
        root = r.compose(text)
        if root is None:
            continue
        found = r.fields(root, "", ("environment",))
        if "environment" in found:
            merged.update(r.string_map(found["environment"][1], "environment"))
    return merged
