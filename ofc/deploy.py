"""``ofc deploy``: build each function of a stack file, store it, deploy it, wait for it.

The faas-cli way, for the process provider: the build context (template plus handler
plus ``configuration.copy`` folders) goes into the local artifact store under its
digest and is tagged with the function's ``image``; the deployment then names that
image, exactly as ``faas-cli up`` names a pushed container image.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from runtime.artifacts import ArtifactStore
from runtime.provider import DEPLOY_LOG_INSTANCE, ROLLOUT_FAILED, ROLLOUT_READY
from sdk.build_context import BuildContextError, create_build_context, read_template
from sdk.gateway import GatewayClient, GatewayError
from sdk.openfaas import FunctionDeployment, RecordError, validate_name
from sdk.stack import Stack, StackError, StackFunction, check_languages, resolve_environment

from .local import REPO, CliError

BUILTIN_TEMPLATES = REPO / "template"
# Languages the process provider can run; others need a container provider.
PROCESS_LANGS = ("python3-http",)


@dataclass(frozen=True)
class Built:
    """One function ready to deploy."""

    name: str
    deployment: FunctionDeployment
    digest: str | None  # None for skip_build functions (image already stored)


def template_roots(stack_dir: Path) -> list[Path]:
    """The project's own ``template/`` folder first (as faas-cli), then the built-in ones."""
    return [p for p in (stack_dir / "template", BUILTIN_TEMPLATES) if p.is_dir()]


def _template_root_for(roots: list[Path], lang: str) -> Path:
    for root in roots:
        if (root / lang / "template.yml").is_file():
            return root
    raise CliError(f"no template for language {lang!r} in {', '.join(map(str, roots))}")


def build_function(
    stack: Stack,
    fn: StackFunction,
    *,
    stack_dir: Path,
    store: ArtifactStore,
    progress: Callable[[str], None],
) -> Built:
    """Build ``fn``'s context into the artifact store and describe its deployment."""
    try:
        validate_name("function name", fn.name)
    except RecordError as exc:
        raise CliError(f"{stack.path}: functions.{fn.name}: {exc}") from None
    roots = template_roots(stack_dir)
    fprocess = fn.fprocess
    digest: str | None = None
    if not fn.skip_build:
        if fn.is_dockerfile or fn.lang not in PROCESS_LANGS:
            raise CliError(
                f"{stack.path}: functions.{fn.name}.lang: {fn.lang!r} cannot run on the process "
                f"provider (supported: {', '.join(PROCESS_LANGS)})"
            )
        root = _template_root_for(roots, fn.lang)
        template = read_template(root, fn.lang)
        fprocess = fprocess or template.fprocess
        with tempfile.TemporaryDirectory(prefix="ofc-build-") as tmp:
            try:
                context = create_build_context(
                    stack, fn.name, project_dir=stack_dir, template_root=root, dest=Path(tmp)
                )
            except BuildContextError as exc:
                raise CliError(str(exc)) from None
            digest = store.put(context)
        store.tag(fn.image, digest)
        progress(f"{fn.name}: built {fn.image} ({digest[:19]})")
    try:
        env_vars = resolve_environment(stack, fn, stack_dir)
    except StackError as exc:
        raise CliError(str(exc)) from None
    deployment = FunctionDeployment(
        service=fn.name,
        image=fn.image,
        namespace=fn.namespace,
        env_process=fprocess,
        env_vars=env_vars,
        constraints=list(fn.constraints),
        secrets=list(fn.secrets),
        labels=dict(fn.labels),
        annotations=dict(fn.annotations),
        limits=fn.limits,
        requests=fn.requests,
        read_only_root_filesystem=fn.readonly_root_filesystem,
    )
    return Built(fn.name, deployment, digest)


def check_stack(stack: Stack, stack_dir: Path) -> None:
    """Refuse unknown languages before anything is built, naming function and language."""
    known: set[str] = set()
    for root in template_roots(stack_dir):
        known.update(p.name for p in root.iterdir() if (p / "template.yml").is_file())
    try:
        check_languages(stack, sorted(known))
    except StackError as exc:
        raise CliError(str(exc)) from None


def deploy(client: GatewayClient, built: Built) -> str:
    """Deploy (PUT, else POST); returns the time to follow the rollout's log from."""
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        client.deploy(built.deployment)
    except GatewayError as exc:
        raise CliError(f"{built.name}: {exc}") from None
    return since


def wait_for_rollout(
    client: GatewayClient,
    built: Built,
    since: str,
    *,
    timeout: float,
    progress: Callable[[str], None],
) -> None:
    """Follow the function's log from ``since`` until the provider says ready or failed."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        records = list(client.logs(built.name, since=since))
        for record in records[seen:]:
            text = record.get("text", "")
            if record.get("instance") in ("build", DEPLOY_LOG_INSTANCE):
                progress(f"{built.name}: {text}")
            if record.get("instance") == DEPLOY_LOG_INSTANCE:
                if text.startswith(ROLLOUT_READY):
                    return
                if text.startswith(ROLLOUT_FAILED):
                    raise CliError(f"{built.name}: {text[len(ROLLOUT_FAILED) :].strip()}")
        seen = len(records)
        time.sleep(0.05)
    raise CliError(f"{built.name}: not ready after {timeout:g} s; see `ofc logs {built.name}`")


def function_url(gateway_url: str, name: str) -> str:
    return f"{gateway_url}/function/{name}"
