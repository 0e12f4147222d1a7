"""The server route: push a labeling config and tasks to a running Label Studio, and pull its export
back, through Label Studio's Python SDK (``label-studio-sdk``, the ``[label]`` extra; imported only
here, only when a command is given ``--url``). The token is never written (:class:`Server`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from mixtral_ft.errors import InputError, MissingDependencyError, MixftError, Problem, UsageError
from mixtral_ft.label.config import config_problems
from mixtral_ft.util.provenance import scrub_text

DEFAULT_KEY_ENV = "LABEL_STUDIO_API_KEY"
IMPORT_BATCH = 500  # tasks per import request (Label Studio takes up to 250,000 and 200 MB per request)


class ServerError(MixftError):
    """Label Studio refused a request or could not be reached (exit 1)."""


@dataclass(frozen=True)
class Server:
    """Where the server is and which variable holds the token (never the token itself).

    The API token comes from an environment variable (``--api-key-env``, default
    ``LABEL_STUDIO_API_KEY``): a personal access token from Label Studio's *Account & Settings*
    page (a JWT refresh token; the SDK exchanges it for short-lived access tokens at
    ``/api/token/refresh/``; Label Studio 1.23 refuses legacy tokens in new organizations unless
    they are turned on). The token is never written: commands record the variable's name, URLs are
    recorded with credentials and secret-looking query values scrubbed (``util.provenance``), and any
    message that could carry the token has it replaced by ``***``.
    """

    url: str
    key_env: str = DEFAULT_KEY_ENV

    @property
    def shown(self) -> str:
        return scrub_text(self.url.rstrip("/"))

    def identity(self) -> dict[str, Any]:
        return {"url": self.shown, "api_key_env": self.key_env}


@dataclass(frozen=True)
class ServerExport:
    """A project's JSON export as pulled, and the server's users (id -> email)."""

    server: Server
    project: int
    data: bytes
    users: dict[int, str]

    @property
    def where(self) -> str:
        return f"{self.server.shown} project {self.project}"

    def identity(self) -> dict[str, Any]:
        return {**self.server.identity(), "project": self.project}


def _token(server: Server) -> str:
    if not server.key_env or not server.key_env.replace("_", "").isalnum():
        raise UsageError(f"--api-key-env {server.key_env!r}: not an environment variable name")
    token = os.environ.get(server.key_env, "").strip()
    if not token:
        raise UsageError(
            f"--url {server.shown}: set {server.key_env} to a Label Studio access token "
            "(Account & Settings > Personal Access Token)"
        )
    return token


def _scrubbed(text: str, token: str) -> str:
    return scrub_text(text.replace(token, "***")) if token else scrub_text(text)


@contextmanager
def _errors(server: Server, token: str, doing: str) -> Iterator[None]:
    """Turn the SDK's and httpx's errors into one line that names the server and never the token."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as e:
        body = e.body.get("detail", e.body) if isinstance(e.body, dict) else e.body
        raise ServerError(
            _scrubbed(f"Label Studio at {server.shown} refused to {doing}: HTTP {e.status_code}: {body}", token)
        ) from None
    except httpx.HTTPError as e:
        raise ServerError(_scrubbed(f"cannot reach Label Studio at {server.shown} to {doing}: {e}", token)) from None


def _client(server: Server) -> tuple[Any, str]:
    if not server.url.startswith(("http://", "https://")):
        raise UsageError(f"--url {server.shown!r}: must start with http:// or https://")
    token = _token(server)
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:
        raise MissingDependencyError(
            "--url needs Label Studio's SDK: pip install 'mixtral-ft[label]' (or pip install label-studio-sdk)"
        ) from None
    with _errors(server, token, "accept the API token"):  # the SDK checks a token's expiry up front
        return LabelStudio(base_url=server.url.rstrip("/"), api_key=token, timeout=120), token


def _call[R](server: Server, token: str, doing: str, fn: Callable[[], R]) -> R:
    with _errors(server, token, doing):
        return fn()


def push(server: Server, title: str, config_xml: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """Create a project with ``config_xml`` and import ``tasks`` (with their predictions); returns
    ``{"project", "project_url", "tasks"}``."""
    client, token = _client(server)
    project = _call(
        server, token, "create a project", lambda: client.projects.create(title=title, label_config=config_xml)
    )
    imported = 0
    for start in range(0, len(tasks), IMPORT_BATCH):
        batch = tasks[start : start + IMPORT_BATCH]
        answer = _call(server, token, "import tasks", partial(client.projects.import_tasks, project.id, request=batch))
        imported += int(getattr(answer, "task_count", None) or 0)
    if imported != len(tasks):
        raise ServerError(
            f"Label Studio at {server.shown} imported {imported} of {len(tasks)} tasks into project {project.id}"
        )
    return {"project": project.id, "project_url": f"{server.shown}/projects/{project.id}", "tasks": imported}


def pull(server: Server, project: int) -> ServerExport:
    """Project ``project``'s JSON export (every task, labeled or not) and the users' emails; refuses a
    project whose labeling config is not one the importer reads."""
    client, token = _client(server)
    found = _call(server, token, f"open project {project}", lambda: client.projects.get(id=project))
    problems = config_problems(found.label_config or "")
    if problems:
        where = f"{server.shown} project {project}"
        raise InputError([Problem(where, None, "label_config", f"{p}: not mixft's labeling config") for p in problems])
    users = _call(server, token, "list users", lambda: client.users.list())
    data = _call(
        server,
        token,
        f"export project {project}",
        lambda: b"".join(client.projects.exports.download_sync(project, export_type="JSON", download_all_tasks=True)),
    )
    emails = {u.id: u.email for u in users if getattr(u, "id", None) is not None and getattr(u, "email", None)}
    return ServerExport(server, project, data, emails)
