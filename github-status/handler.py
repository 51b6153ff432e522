"""github-status: show a pipeline stage's CommitStatus on GitHub.

Every stage posts a :class:`~sdk.events.CommitStatus` here (``sdk.status.StatusReporter``),
signed with ``X-Cloud-Signature``. By default it becomes a check run (Checks API), exactly
one per commit and context: the run is looked up by name and updated, and created only
when there is none (the original created a new run on every report). With
``use_checks=false`` it becomes a commit status instead (``POST /statuses/{sha}``).

Answers: 401 bad signature, 400 malformed status, 200 ``{"reported": context}``, and
202 with a message when GitHub could not be told: a status never breaks the pipeline.
500 only when this function is misconfigured (the message says what to fix).

Environment, read once at import:

* ``secret_mount_path`` (``/var/openfaas/secrets``): where the secrets are mounted.
* ``github_app_id``: the GitHub App's id; without one, statuses are accepted and dropped.
* ``github_api_url`` (``https://api.github.com``): GitHub's REST API.
* ``use_checks`` (true): check runs; false sends commit statuses.
* ``report_status`` (true): false accepts statuses and drops them (202).
* ``pipeline_log_url`` (optional): the ``pipeline-log`` function's URL. A finished
  function's check run shows the tail of its build log, fetched from the status's
  ``log_url`` or else from ``<pipeline_log_url>?owner=&repo=&sha=&function=``
  (``sdk.logstore.read_query``). Either is read with an ``X-Cloud-Signature`` over the
  URL's query string, as pipeline-log requires of reads. Every status, reported to
  GitHub or not (no App, no installation: the built-in git remote), is also kept there
  (``POST <pipeline_log_url>/status``, signed) for the dashboard.

Secrets: ``payload-secret`` (always), ``private-key`` (the App's PEM, when reporting).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from sdk.config import ConfigError, env_bool, env_str
from sdk.events import STACK_CONTEXT, CommitStatus, RecordError
from sdk.function import Rejected, answer, check_cloud_signature, json_answer, parse_json
from sdk.github_app import GitHubApp, GitHubError
from sdk.logstore import read_query
from sdk.secrets import DEFAULT_MOUNT_PATH, SecretMissing, read_secret
from sdk.signing import CLOUD_SIGNATURE, sign
from sdk.status import truncate

log = logging.getLogger("github-status")

# GitHub's limit for a check run's output.summary and output.text.
OUTPUT_LIMIT = 65535
LOG_FETCH_TIMEOUT = 5.0
# Enough bytes for OUTPUT_LIMIT characters of UTF-8 (at most 4 bytes each).
LOG_KEEP_BYTES = 4 * OUTPUT_LIMIT
CONCLUSIONS = {"success": "success", "failure": "failure", "error": "failure"}
KEEP_TIMEOUT = 5.0  # seconds to store a status in pipeline-log
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Settings:
    """This function's configuration; :meth:`from_env` names any bad variable."""

    secret_mount_path: str
    github_app_id: str
    github_api_url: str
    use_checks: bool
    report_status: bool
    pipeline_log_url: str
    dashboard_url: str  # the dashboard's public URL; "" leaves out the build log link

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        app_id = env_str(env, "github_app_id", "")
        report = env_bool(env, "report_status", True)
        if report and not app_id:
            # A platform without a GitHub App (the built-in git remote, a laptop) has
            # nowhere to report to: accept and drop statuses instead of failing each call.
            logging.getLogger("github-status").warning("github_app_id is not set: statuses are not reported")
            report = False
        settings = cls(
            secret_mount_path=env_str(env, "secret_mount_path", DEFAULT_MOUNT_PATH),
            github_app_id=app_id,
            github_api_url=env_str(env, "github_api_url", "https://api.github.com").rstrip("/"),
            use_checks=env_bool(env, "use_checks", True),
            report_status=report,
            pipeline_log_url=env_str(env, "pipeline_log_url", ""),
            dashboard_url=env_str(env, "dashboard_url", "").rstrip("/"),
        )
        for name in ("github_api_url", "pipeline_log_url", "dashboard_url"):
            value = getattr(settings, name)
            if value and not value.startswith(("http://", "https://")):
                raise ConfigError(f"{name}={value!r}: expected an http:// or https:// URL")
        return settings


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_log(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """A build log as a Markdown code block of at most ``limit`` characters.

    A longer log keeps its end (where a build fails), cut at a line start, after a note
    saying how much was left out.
    """
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)  # a fence the log itself cannot close
    head, tail = f"{fence}text\n", f"\n{fence}"
    budget = limit - len(head) - len(tail)
    if len(text) <= budget:
        return head + text + tail
    note = "**The build log was truncated**: showing its last {} of {} characters.\n\n"
    kept = text[-(budget - len(note.format(budget, len(text)))) :]
    newline = kept.find("\n", 0, 1000)
    if newline != -1:
        kept = kept[newline + 1 :]
    return note.format(len(kept), len(text)) + head + kept + tail


class Reporter:
    """The typed core: one CommitStatus → one check run (or commit status) on GitHub."""

    def __init__(
        self,
        settings: Settings,
        app: GitHubApp,
        session: requests.Session,
        payload_secret: str,
    ) -> None:
        self.settings = settings
        self.app = app
        self._session = session
        self._payload_secret = payload_secret  # signs build-log reads (pipeline-log asks)
        # Reports for one commit and context are serialised so two at once cannot both
        # find no check run and both create one; a fixed pool keeps memory bounded.
        self._locks = [threading.Lock() for _ in range(64)]

    def report(self, status: CommitStatus) -> None:
        """Send ``status`` to GitHub; :class:`GitHubError` when GitHub would not take it."""
        assert status.installation_id is not None
        if not self.settings.use_checks:
            self._commit_status(status)
            return
        key = (status.owner.lower(), status.repo.lower(), status.sha, status.context)
        with self._locks[hash(key) % len(self._locks)]:
            self._check_run(status)

    def _commit_status(self, status: CommitStatus) -> None:
        body: dict[str, Any] = {
            "state": status.state,
            "description": truncate(status.description),
            "context": status.context,
        }
        if status.target_url:
            body["target_url"] = status.target_url
        path = f"/repos/{status.owner}/{status.repo}/statuses/{status.sha}"
        self.app.request("POST", path, status.installation_id or 0, json=body)

    def _check_run(self, status: CommitStatus) -> None:
        repo = f"/repos/{status.owner}/{status.repo}"
        installation = status.installation_id or 0
        params: dict[str, str | int] = {"check_name": status.context, "filter": "latest"}
        if self.settings.github_app_id.isdigit():
            # Only our App's runs: another App's run of the same name is not ours to update.
            params["app_id"] = int(self.settings.github_app_id)
        found = self.app.request(
            "GET", f"{repo}/commits/{status.sha}/check-runs", installation, params=params
        ).json()
        runs = found.get("check_runs") or []
        body = self._check_run_body(status)
        if runs:
            run_id = int(runs[0]["id"])
            self.app.request("PATCH", f"{repo}/check-runs/{run_id}", installation, json=body)
            log.info(
                "updated check run %d %s for %s/%s@%s",
                run_id,
                status.context,
                status.owner,
                status.repo,
                status.sha[:12],
            )
        else:
            created = self.app.request(
                "POST", f"{repo}/check-runs", installation, json={**body, "head_sha": status.sha}
            ).json()
            log.info(
                "created check run %s %s for %s/%s@%s",
                created.get("id"),
                status.context,
                status.owner,
                status.repo,
                status.sha[:12],
            )

    def _check_run_body(self, status: CommitStatus) -> dict[str, Any]:
        description = truncate(status.description)
        summary = description or status.state
        if status.target_url:
            summary += f"\n\n[Details]({status.target_url})"
        log_page = self._log_page(status)
        if log_page:
            summary += f"\n\n[Build log]({log_page})"
        output: dict[str, str] = {
            "title": "Deploy to OpenFaaS"
            if status.context == STACK_CONTEXT
            else f"Build {status.context}",
            "summary": summary[:OUTPUT_LIMIT],
        }
        build_log = self._build_log(status)
        if build_log:
            output["text"] = format_log(build_log)
        body: dict[str, Any] = {"name": status.context, "output": output}
        if status.target_url:
            body["details_url"] = status.target_url
        if status.state == "pending":
            body.update(status="in_progress", started_at=_utc_now())
        else:
            body.update(
                status="completed", conclusion=CONCLUSIONS[status.state], completed_at=_utc_now()
            )
        return body

    def _log_page(self, status: CommitStatus) -> str:
        """The dashboard's page of this function's build log at this commit, if it has one."""
        if not self.settings.dashboard_url or status.context == STACK_CONTEXT:
            return ""
        owner, function = quote(status.owner.lower(), safe=""), quote(status.context, safe="")
        return f"{self.settings.dashboard_url}/{owner}/{function}/build/{status.sha}"

    def _build_log(self, status: CommitStatus) -> str:
        """The build log's tail, or "" when there is none (or it cannot be fetched in time)."""
        if status.log_url:
            return self._fetch(status.log_url)
        if (
            self.settings.pipeline_log_url
            and status.state != "pending"
            and status.context != STACK_CONTEXT
        ):
            query = read_query(status.owner, status.repo, status.sha, status.context)
            return self._fetch(f"{self.settings.pipeline_log_url}?{query}")
        return ""

    def _fetch(self, url: str) -> str:
        """GET ``url`` signed over its query string; at most the last LOG_KEEP_BYTES of it."""
        where = url.split("?", 1)[0]
        signature = sign(urlsplit(url).query.encode(), self._payload_secret)
        deadline = time.monotonic() + LOG_FETCH_TIMEOUT
        tail = bytearray()
        try:
            with self._session.get(
                url,
                headers={CLOUD_SIGNATURE: signature},
                timeout=LOG_FETCH_TIMEOUT,
                stream=True,
            ) as response:
                if response.status_code != 200:
                    log.warning("build log not shown: %s answered %d", where, response.status_code)
                    return ""
                for chunk in response.iter_content(64 * 1024):
                    tail += chunk
                    if len(tail) > LOG_KEEP_BYTES:
                        del tail[:-LOG_KEEP_BYTES]
                    if time.monotonic() > deadline:
                        log.warning(
                            "build log not shown: %s took longer than %.0f s",
                            where,
                            LOG_FETCH_TIMEOUT,
                        )
                        return ""
        except requests.RequestException as exc:
            log.warning("build log not shown: %s: %s", where, type(exc).__name__)
            return ""
        return tail.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Service:
    """What a call needs, built once at import by :func:`build`."""

    settings: Settings
    payload_secret: str
    reporter: Reporter | None  # None when report_status is false
    session: requests.Session

    def keep(self, status: CommitStatus, where: str) -> None:
        """Store the status in pipeline-log, for the dashboard: pushes to the built-in git
        remote have no GitHub to show it, and GitHub's own copy is not ours to read back.
        Best effort, like reporting: a failure is logged."""
        if not self.settings.pipeline_log_url:
            return
        body = json.dumps(status.to_json()).encode()
        try:
            response = self.session.post(
                f"{self.settings.pipeline_log_url}/status", data=body,
                headers={CLOUD_SIGNATURE: sign(body, self.payload_secret)}, timeout=KEEP_TIMEOUT,
            )  # fmt: skip
            if response.status_code != 200:
                log.warning("status %s not kept: pipeline-log answered %d", where, response.status_code)
        except requests.RequestException as exc:
            log.warning("status %s not kept: %s", where, type(exc).__name__)

    def handle(self, status: CommitStatus) -> dict[str, Any]:
        where = f"{status.owner}/{status.repo}@{status.sha[:12]} {status.context}={status.state}"
        self.keep(status, where)
        if self.reporter is None:
            return json_answer(202, {"message": f"not reported: report_status is false ({where})"})
        if status.installation_id is None:
            log.warning(
                "status %s not reported: the push came without a GitHub App installation id", where
            )
            return json_answer(202, {"message": f"not reported: no installation_id for {where}"})
        try:
            self.reporter.report(status)
        except GitHubError as exc:
            log.warning("status %s not reported: %s", where, exc)
            return json_answer(202, {"message": f"not reported: {exc}"})
        log.info("status %s reported", where)
        return json_answer(200, {"reported": status.context})


def build(env: Mapping[str, str]) -> Service:
    """The service for ``env``; :class:`ConfigError`, :class:`SecretMissing` or ``ValueError``
    (a malformed key) say what is wrong, never a secret's value."""
    settings = Settings.from_env(env)
    payload_secret = read_secret("payload-secret", settings.secret_mount_path)
    session = requests.Session()
    if not settings.report_status:
        return Service(settings, payload_secret, None, session)
    app = GitHubApp(
        settings.github_app_id,
        read_secret("private-key", settings.secret_mount_path),
        api_url=settings.github_api_url,
        session=session,
    )
    return Service(
        settings, payload_secret, Reporter(settings, app, session, payload_secret), session
    )


def parse_status(body: bytes) -> CommitStatus:
    """The CommitStatus in ``body``; :class:`Rejected` 400 saying what is wrong."""
    try:
        status = CommitStatus.from_json(parse_json(body))
    except RecordError as exc:
        raise Rejected(400, str(exc)) from None
    if not _SHA.match(status.sha):
        raise Rejected(400, f"CommitStatus: sha {status.sha!r} is not a 40-character commit id")
    for name in ("owner", "repo", "context"):
        if not getattr(status, name).strip():
            raise Rejected(400, f"CommitStatus: {name} is empty")
    return status


def _start(env: Mapping[str, str]) -> tuple[Service | None, str]:
    try:
        return build(env), ""
    except (ConfigError, SecretMissing, ValueError) as exc:
        message = f"github-status is misconfigured: {exc}"
        log.error("%s", message)
        return None, message


_SERVICE, _CONFIG_ERROR = _start(os.environ)


def handle(event: Any, context: Any) -> dict[str, Any]:
    """Verify, parse, report: see the module docstring for the answers."""
    if _SERVICE is None:
        return answer(500, _CONFIG_ERROR)
    try:
        if event.method != "POST":
            raise Rejected(405, "POST a CommitStatus")
        check_cloud_signature(event.body, event.headers, _SERVICE.payload_secret)
        status = parse_status(event.body)
    except Rejected as exc:
        return answer(exc.status, exc.message)
    return _SERVICE.handle(status)
