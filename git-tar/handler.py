"""git-tar: from a pushed commit to one build request per function.

1. Clone exactly the pushed commit (shallow where the server allows), from a configured
   git host only, within a size and time budget; private repositories with the App's
   installation token as the password of ``x-access-token``.
2. Read ``stack.yml`` with the platform's faas-cli-compatible parser (no environment
   substitution from the platform's own environment) and check every language.
3. Lay out each function's build context as ``faas-cli build --shrinkwrap`` does, and
   pack it as the builder expects: ``com.openfaas.docker.config`` + ``context/``.
4. Hand the functions to buildshiprun, ``build_concurrency`` at a time. A function whose
   context digest equals the one its deployed version was built from is redeployed from
   that image without a rebuild.
5. Report ``stack-deploy`` success or failure, then garbage-collect the functions that
   left the stack.

Any step that fails ends as a ``failure`` status naming the file, function and reason.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import git

from sdk.build_context import (
    BuildContextError,
    builder_tar,
    context_digest,
    create_build_context,
    read_template,
    resolve_build_args,
)
from sdk.config import ConfigError, env_bool, env_duration, env_int, env_str
from sdk.events import (
    STACK_CONTEXT,
    BuildRequest,
    CommitStatus,
    GarbageRequest,
    PushEvent,
)
from sdk.function import Rejected, configured, json_answer, read_signed
from sdk.gateway import GatewayClient, GatewayError
from sdk.github_app import GitHubApp, GitHubError
from sdk.gitremote import read_token
from sdk.secrets import DEFAULT_MOUNT_PATH, SecretMissing, read_secret
from sdk.signing import CLOUD_SIGNATURE, sign
from sdk.stack import Stack, StackError, check_languages, load_stack
from sdk.status import StatusReporter

log = logging.getLogger("git-tar")

DIGEST_LABEL = "com.openfaas.cloud.context-digest"
OWNER_LABEL = "com.openfaas.cloud.git-owner"


class Failed(Exception):
    """The stack cannot be deployed; the message is what the commit status says."""


@dataclass(frozen=True)
class Config:
    gateway_url: str
    secret_mount_path: str
    git_hosts: tuple[str, ...]
    registry: str
    templates_dir: Path
    build_concurrency: int
    clone_timeout: float
    max_repo_bytes: int
    enable_dockerfile_lang: bool
    report_status: bool
    github_app_id: str
    github_api_url: str
    git_remote_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        here = Path(__file__).resolve().parent
        hosts = tuple(
            h.strip().lower()
            for h in env_str(env, "git_hosts", "github.com").split(",")
            if h.strip()
        )
        return cls(
            gateway_url=env_str(env, "gateway_url", "http://127.0.0.1:8080"),
            secret_mount_path=env_str(env, "secret_mount_path", DEFAULT_MOUNT_PATH),
            git_hosts=hosts,
            registry=env_str(env, "push_repository_url", "127.0.0.1:5000").rstrip("/"),
            # configuration.copy puts the platform's template/ beside this handler.
            templates_dir=Path(env_str(env, "templates_dir", str(here / "template"))),
            build_concurrency=env_int(env, "build_concurrency", 2, minimum=1, maximum=32),
            clone_timeout=env_duration(env, "clone_timeout", 120.0),
            max_repo_bytes=env_int(env, "max_repo_bytes", 200 * 1024 * 1024, minimum=1),
            enable_dockerfile_lang=env_bool(env, "enable_dockerfile_lang", False),
            report_status=env_bool(env, "report_status", True),
            github_app_id=env_str(env, "github_app_id", ""),
            github_api_url=env_str(env, "github_api_url", "https://api.github.com"),
            # The platform's own git remote (ofc's built-in one); its repositories are
            # cloned with a read token derived from the payload secret.
            git_remote_url=env_str(env, "git_remote_url", "").rstrip("/"),
        )


# -- cloning ----------------------------------------------------------------------------------------
def _scrub(text: str, token: str | None) -> str:
    """Remove credentials from git's messages (they echo the URL they were given)."""
    if token:
        text = text.replace(token, "***")
    return re.sub(r"//[^/@\s]+@", "//***@", text)


def clone_url_with_token(clone_url: str, token: str | None) -> str:
    if not token:
        return clone_url
    parts = urlsplit(clone_url)
    return urlunsplit(
        parts._replace(
            netloc=f"x-access-token:{token}@{parts.hostname}"
            + (f":{parts.port}" if parts.port else "")
        )
    )


def check_git_host(clone_url: str, allowed: tuple[str, ...]) -> None:
    parts = urlsplit(clone_url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    if parts.scheme not in ("https", "http") or host.lower() not in allowed:
        raise Failed(
            f"cloning from {parts.scheme}://{host} is not allowed (git hosts: {', '.join(allowed)})"
        )


def clone(push: PushEvent, dest: Path, token: str | None, cfg: Config) -> None:
    """Fetch exactly ``push.sha`` into ``dest`` and check it out."""
    check_git_host(push.clone_url, cfg.git_hosts)
    url = clone_url_with_token(push.clone_url, token)
    repo = git.Repo.init(dest)
    env = {"GIT_TERMINAL_PROMPT": "0"}
    try:
        try:
            repo.git.fetch(url, push.sha, depth=1, env=env, kill_after_timeout=cfg.clone_timeout)
        except git.GitCommandError:
            # Servers that refuse to fetch a commit by id: fetch the branch and find it.
            repo.git.fetch(url, push.ref, env=env, kill_after_timeout=cfg.clone_timeout)
        repo.git.checkout(push.sha, force=True)
    except git.GitCommandError as exc:
        detail = _scrub(str(exc.stderr or exc), token).strip().splitlines()
        raise Failed(
            f"cannot clone {push.full_name}@{push.sha[:12]}: {detail[-1] if detail else 'git failed'}"
        ) from None
    shutil.rmtree(dest / ".git", ignore_errors=True)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and not p.is_symlink())
    if size > cfg.max_repo_bytes:
        raise Failed(f"the repository is {size} bytes, over the {cfg.max_repo_bytes} byte limit")


# -- stack and tars ---------------------------------------------------------------------------------
def read_stack(project: Path, cfg: Config) -> Stack:
    for name in ("stack.yaml", "stack.yml"):
        if (project / name).is_file():
            path = project / name
            break
    else:
        raise Failed("no stack.yml in the repository root")
    if (project / "template").is_dir():
        raise Failed(
            "a template/ folder in the repository is not supported: the platform builds with its own templates"
        )
    try:
        # No substitution from the platform's environment: ${VAR:-default} takes the default.
        stack = load_stack(path, {})
        known = sorted(
            p.name for p in cfg.templates_dir.iterdir() if (p / "template.yml").is_file()
        )
        check_languages(stack, known)
    except StackError as exc:
        raise Failed(str(exc).replace(str(project) + os.sep, "")) from None
    for fn in stack.functions.values():
        if fn.is_dockerfile and not cfg.enable_dockerfile_lang:
            raise Failed(
                f"{path.name}: functions.{fn.name}.lang: dockerfile functions are not enabled on this platform"
            )
        if fn.skip_build:
            raise Failed(
                f"{path.name}: functions.{fn.name}: skip_build functions cannot be deployed from git"
            )
    return stack


def image_for(push: PushEvent, function: str, registry: str) -> str:
    """``<registry>/<owner>/<repo>-<function>:<branch>-<sha12>``, lower-case, as pushed to the registry."""
    branch = re.sub(r"[^a-z0-9_.-]", "-", push.branch.lower()) or "build"
    return f"{registry}/{push.owner.lower()}/{push.repo.lower()}-{function.lower()}:{branch}-{push.sha[:12]}"


# -- the core ---------------------------------------------------------------------------------------
class GitTar:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.gateway = GatewayClient(cfg.gateway_url, timeout=cfg.clone_timeout)

    def admin_gateway(self) -> GatewayClient:
        """The gateway with its credentials, for reading the deployed functions."""
        return GatewayClient(
            self.cfg.gateway_url,
            self.secret("basic-auth-user"),
            self.secret("basic-auth-password"),
            timeout=30,
        )

    def secret(self, name: str) -> str:
        try:
            return read_secret(name, self.cfg.secret_mount_path)
        except SecretMissing as exc:
            raise Failed(f"the platform is misconfigured: {exc}") from None

    def token_for(self, push: PushEvent) -> str | None:
        remote = self.cfg.git_remote_url
        if remote and push.clone_url.startswith(remote + "/"):
            return read_token(self.secret("payload-secret"), push.owner, push.repo)
        if not push.private:
            return None
        if not (self.cfg.github_app_id and push.installation_id):
            raise Failed(
                "a private repository needs the GitHub App (github_app_id) and an installation"
            )
        try:
            app = GitHubApp(
                self.cfg.github_app_id, self.secret("private-key"), api_url=self.cfg.github_api_url
            )
            return app.installation_token(push.installation_id)
        except GitHubError as exc:
            raise Failed(f"cannot get an installation token: {exc}") from None

    def run(self, push: PushEvent) -> dict[str, Any]:
        secret = self.secret("payload-secret")
        reporter = StatusReporter(self.gateway, secret, enabled=self.cfg.report_status)

        def status(state: str, description: str) -> None:
            reporter.report(
                CommitStatus(
                    owner=push.owner,
                    repo=push.repo,
                    sha=push.sha,
                    installation_id=push.installation_id,
                    context=STACK_CONTEXT,
                    state=state,
                    description=description,
                )
            )

        try:
            results = self.build_all(push, secret)
        except Failed as exc:
            log.warning("%s@%s: %s", push.full_name, push.sha[:12], exc)
            status("failure", str(exc))
            return {"status": "failure", "reason": str(exc)}
        failed = [r["function"] for r in results if r.get("status") != "success"]
        if failed:
            status(
                "failure", f"{len(failed)} of {len(results)} functions failed: {', '.join(failed)}"
            )
        else:
            status("success", f"{len(results)} function(s) deployed")
            self.garbage_collect(push, [r["function"] for r in results], secret)
        return {"status": "failure" if failed else "success", "functions": results}

    def build_all(self, push: PushEvent, secret: str) -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="git-tar-") as tmp:
            project = Path(tmp) / "repo"
            project.mkdir()
            clone(push, project, self.token_for(push), self.cfg)
            stack = read_stack(project, self.cfg)
            deployed = self.deployed_digests(push)
            requests = [
                self.request_for(push, stack, name, project, Path(tmp) / "build", deployed)
                for name in stack.functions
            ]
        with ThreadPoolExecutor(self.cfg.build_concurrency) as pool:
            return list(pool.map(lambda r: self.ship(r, secret), requests))

    def deployed_digests(self, push: PushEvent) -> dict[str, tuple[str, str]]:
        """Deployed functions of this owner: name -> (context digest, image)."""
        try:
            functions = self.admin_gateway().list_functions()
        except (GatewayError, Failed) as exc:
            log.warning("cannot list functions, building everything: %s", exc)
            return {}
        out = {}
        for fn in functions:
            labels = fn.get("labels") or {}
            if labels.get(OWNER_LABEL, "").lower() == push.owner.lower() and labels.get(
                DIGEST_LABEL
            ):
                out[fn["name"]] = (labels[DIGEST_LABEL], fn.get("image", ""))
        return out

    def request_for(
        self,
        push: PushEvent,
        stack: Stack,
        name: str,
        project: Path,
        build_root: Path,
        deployed: dict[str, tuple[str, str]],
    ) -> BuildRequest:
        fn = stack.functions[name]
        try:
            context = create_build_context(
                stack,
                name,
                project_dir=project,
                template_root=self.cfg.templates_dir,
                dest=build_root,
            )
            build_args = resolve_build_args(fn, read_template(self.cfg.templates_dir, fn.lang))
        except BuildContextError as exc:
            raise Failed(str(exc).replace(str(project) + os.sep, "")) from None
        digest = context_digest(context)
        common: dict[str, Any] = {
            "push": push.to_json(),
            "function": name,
            "context_digest": digest,
            "environment": dict(fn.environment),
            "secrets": list(fn.secrets),
            "labels": dict(fn.labels),
            "annotations": dict(fn.annotations),
        }
        previous = deployed.get(f"{push.owner.lower()}-{name}")
        if previous and previous[0] == digest and previous[1]:
            log.info("%s: context unchanged (%s), redeploying %s", name, digest[:12], previous[1])
            return BuildRequest(image=previous[1], skip_build=True, **common)
        image = image_for(push, name, self.cfg.registry)
        tar = builder_tar(context, image, build_args)
        return BuildRequest(image=image, tar=base64.b64encode(tar).decode(), **common)

    def ship(self, request: BuildRequest, secret: str) -> dict[str, Any]:
        body = json.dumps(request.to_json()).encode()
        try:
            response = self.gateway.invoke(
                "buildshiprun",
                body,
                headers={CLOUD_SIGNATURE: sign(body, secret), "Content-Type": "application/json"},
                timeout=15 * 60,  # buildshiprun's own exec_timeout
            )
        except GatewayError as exc:
            return {"function": request.function, "status": "failure", "reason": exc.message}
        try:
            result = response.json()
        except ValueError:
            result = {
                "status": "failure",
                "reason": f"buildshiprun answered {response.status_code}",
            }
        return {"function": request.function, **result}

    def garbage_collect(self, push: PushEvent, keep: list[str], secret: str) -> None:
        body = json.dumps(
            GarbageRequest(owner=push.owner, repo=push.repo, functions=keep).to_json()
        ).encode()
        try:
            response = self.gateway.invoke(
                "garbage-collect", body, headers={CLOUD_SIGNATURE: sign(body, secret)}
            )
            if response.status_code != 200:
                log.warning(
                    "garbage-collect answered %d: %s", response.status_code, response.text[:200]
                )
        except GatewayError as exc:
            log.warning("cannot garbage-collect %s: %s", push.full_name, exc)


GIT_TAR = configured(lambda: GitTar(Config.from_env(os.environ)), "git-tar")


def handle(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(GIT_TAR, ConfigError):
        return json_answer(
            500, {"status": "failure", "reason": f"git-tar is misconfigured: {GIT_TAR}"}
        )
    try:
        push, _ = read_signed(event.body, event.headers, PushEvent, GIT_TAR.cfg.secret_mount_path)
    except Rejected as exc:
        return json_answer(exc.status, {"status": "failure", "reason": exc.message})
    return json_answer(200, GIT_TAR.run(push))
