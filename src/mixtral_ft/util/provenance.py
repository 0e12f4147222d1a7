"""What goes into every manifest: versions, git commit, command line, time."""

from __future__ import annotations

import datetime as _dt
import itertools
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from mixtral_ft.errors import UsageError

# Packages whose versions change numbers mixft prints. Missing ones are recorded as null.
TRACKED_PACKAGES = (
    "mixtral-ft",
    "axolotl",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "datasets",
    "tokenizers",
    "trl",
    "pyarrow",
)


def package_versions(names: tuple[str, ...] | list[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions read from package metadata (never imports the package)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the mixft checkout (or ``path``), with ``-dirty`` if it has local changes."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "mixft_git_commit": git_commit(),
    }


_ARGV: list[str] | None = None


def set_command_line(argv: list[str]) -> None:
    """Record the command being run when it is not ``sys.argv`` (``mixft.cli.main.main(argv)``)."""
    global _ARGV
    _ARGV = list(argv)


def command_line() -> list[str]:
    """The mixft command as typed, secrets scrubbed (``scrub_argv``): what manifests record."""
    name = Path(sys.argv[0]).name
    if name in ("main.py", "__main__.py"):  # python -m mixtral_ft.cli.main: the same command as `mixft`
        name = "mixft"
    argv = list(_ARGV) if _ARGV is not None else [name, *sys.argv[1:]]
    return scrub_argv(argv)


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_URL_SECRET_PARAM = re.compile(r"(?i)([?&][^=&#\s]*(?:password|secret|token|key|auth|sig)[^=&#\s]*=)[^&#\s]*")
_SECRET_WORDS = {"password", "passwd", "secret", "token", "apikey", "auth", "credentials"}
REDACTED = "***"


def scrub_text(text: str) -> str:
    """``text`` with URL credentials (``user:password@``) and secret-looking URL parameters redacted."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return _URL_SECRET_PARAM.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def secret_name(name: str) -> bool:
    """Does an option or config key name a secret (``--api-key``, ``comet_api_key``, ``hub.token``)?
    ``--api-key-env`` names a variable and is not one."""
    words = [w for w in re.split(r"[-_.]+", name.lower().lstrip("-")) if w]
    if words and words[-1] == "env":
        return False
    joined = {a + b for a, b in itertools.pairwise(words)}
    return bool(_SECRET_WORDS & (set(words) | joined))


def query_secret(text: str) -> str | None:
    """The name of a secret-looking URL query parameter in ``text`` (``api_key``), or None."""
    m = _URL_SECRET_PARAM.search(text)
    return m.group(1).lstrip("?&").rstrip("=") if m else None


def url_secret(text: str) -> str | None:
    """What secret a URL (or any text) carries: ``"credentials (user:password@)"``, ``"a secret in
    its query (api_key=)"``, or None."""
    if _URL_USERINFO.search(text):
        return "credentials (user:password@)"
    name = query_secret(text)
    return f"a secret in its query ({name}=)" if name else None


# Where each tool reads its secret from, for the advice when one is given on the command line.
SECRET_ENV_HINTS = {
    "comet": "COMET_API_KEY",
    "wandb": "WANDB_API_KEY",
    "mlflow": "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD",
    "hub": "HF_TOKEN",
    "hf": "HF_TOKEN",
}


def refuse_secret_setting(key: str, value_text: str) -> None:
    """Refuse a ``--set KEY=VALUE`` that would write a secret into ``axolotl.yml`` and the manifest:
    a key that names one (``comet_api_key``), or a value whose URL carries credentials."""
    hint = next((v for k, v in SECRET_ENV_HINTS.items() if key.lower().startswith(k)), None)
    where = f"the environment variable the tool reads ({hint})" if hint else "the environment variable the tool reads"
    if secret_name(key):
        raise UsageError(
            f"--set {key}=***: a secret given with --set would be written to axolotl.yml, the run's "
            f"manifest and its log; put it in {where} instead"
        )
    carried = url_secret(value_text)
    if carried:
        raise UsageError(
            f"--set {key}={scrub_text(value_text)}: the URL carries {carried}, which would be written "
            f"to axolotl.yml, the run's manifest and its log; put the credentials in {where} instead"
        )


def scrub_record(obj: Any) -> Any:
    """``obj`` (JSON-like) with every string passed through ``scrub_text``: what a record may hold."""
    if isinstance(obj, str):
        return scrub_text(obj)
    if isinstance(obj, dict):
        return {k: scrub_record(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_record(v) for v in obj]
    return obj


def scrub_argv(argv: list[str]) -> list[str]:
    """A command line safe to write down: URL credentials removed from every argument, and the
    value of any option or ``--set KEY=VALUE`` whose name says secret (token, password, api key)
    replaced by ``***``. An API key belongs in an environment variable (``--api-key-env``)."""
    secret = secret_name

    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if arg.startswith("--") and secret(arg.split("=", 1)[0]):
            if "=" in arg:
                out.append(arg.split("=", 1)[0] + "=" + REDACTED)
            else:
                out.append(arg)
                hide_next = True
            continue
        if not arg.startswith("-") and "=" in arg and secret(arg.split("=", 1)[0]):
            out.append(arg.split("=", 1)[0] + "=" + REDACTED)  # a --set KEY=VALUE override
            continue
        out.append(scrub_text(arg))
    return out
