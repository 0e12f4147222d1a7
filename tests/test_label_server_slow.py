"""The labeling round trip against a real Label Studio (slow tier).

Label Studio 1.23.2 runs from its own venv (``make label-studio-venv`` creates ``.venv-ls``; the
test skips, saying so, where it is absent), on 127.0.0.1 with a temporary data directory (SQLite)
and a temporary HOME. The data directory starts as a copy of ``.venv-ls/migrated-data``, which
``make label-studio-venv`` migrates once (``label-studio version --data-dir``): a database with
every migration applied makes ``label-studio start`` skip them (``_apply_database_migrations`` in
``label_studio/server.py``); without that copy the server migrates a new database itself, as a
first start does (a minute or more). The server's network calls are off: ``LATEST_VERSION_CHECK=false``
(the PyPI version check in ``label_studio/core/utils/common.py``), ``COLLECT_ANALYTICS=false`` (the
telemetry post in ``core/utils/contextlog.py``), empty ``SENTRY_DSN``/``FRONTEND_SENTRY_DSN`` (error reports,
``core/settings/label_studio.py``). Three people sign up through the web form and create a personal
access token on the account page's API (``POST /api/token/``: a JWT refresh token; a fresh
organization refuses legacy tokens). mixft creates the project and imports the tasks with the
judge's pre-annotations (``label export --url``); the annotators submit annotations through the SDK
with results shaped as the editor writes them (the shape is checked against a real editor
submission in tests/data/label/export.json); then the project is exported and imported back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main
from support.label_sample import label_sample

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "label"
LS_VENV = Path(os.environ.get("MIXFT_LABEL_STUDIO_VENV", REPO / ".venv-ls"))
LS_BIN = LS_VENV / "bin" / "label-studio"
LS_MIGRATED = LS_VENV / "migrated-data"  # made by `make label-studio-venv`
START_TIMEOUT_S = 900  # a first start without LS_MIGRATED applies ~200 migrations to a new SQLite database
QUIET_ENV = {
    "LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudioServer:
    """``label-studio start`` in its own process group; ``stop`` ends the group and removes its data."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.home = root / "home"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import httpx

        self.home.mkdir(parents=True)
        if LS_MIGRATED.is_dir():
            shutil.copytree(LS_MIGRATED, self.data)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "PYTHON", "VIRTUAL_ENV"))}
        env.update(QUIET_ENV, HOME=str(self.home), LABEL_STUDIO_BASE_DATA_DIR=str(self.data))
        args = [str(LS_BIN), "start", "--no-browser", "--port", str(self.port), "--internal-host", "127.0.0.1"]
        args += ["--host", self.url, "--data-dir", str(self.data)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"label-studio exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            time.sleep(2)
        pytest.fail(f"label-studio did not answer within {START_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        shutil.rmtree(self.root, ignore_errors=True)

    def person(self, email: str, password: str) -> str:
        """Sign up through the web form, as a person does, and create a personal access token."""
        import httpx

        with httpx.Client(base_url=self.url, timeout=60) as web:
            web.get("/user/signup/")
            form = {"email": email, "password": password, "csrfmiddlewaretoken": web.cookies["csrftoken"]}
            r = web.post("/user/signup/", data=form, headers={"Referer": f"{self.url}/user/signup/"})
            assert r.status_code == 302, r.text[:500]
            r = web.post("/api/token/", headers={"X-CSRFToken": web.cookies["csrftoken"], "Referer": self.url})
            assert r.status_code == 201, r.text[:500]
            return r.json()["token"]


@pytest.fixture
def label_studio(tmp_path_factory):
    if not LS_BIN.exists():
        pytest.skip(f"Label Studio is not installed: {LS_BIN} is missing (run `make label-studio-venv`)")
    server = LabelStudioServer(tmp_path_factory.mktemp("label-studio"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        assert server.proc is None or server.proc.poll() is not None
        assert not server.root.exists()
        with socket.socket() as s:  # nothing listens on the port any more
            assert s.connect_ex(("127.0.0.1", server.port)) != 0


# ---------------------------------------------------------------- what the annotators do


def _region(rid: str, name: str, start: int, end: int, value: dict, origin: str = "manual") -> dict:
    return {
        "value": {"start": start, "end": end, **value},
        "id": rid,
        "from_name": name,
        "to_name": "response",
        "type": "labels" if name == "mistakes" else "textarea",
        "origin": origin,
    }


def _span(rid: str, response: str, text: str, kind: str, explanation: str | None = None, origin: str = "manual"):
    start = response.index(text)
    out = [_region(rid, "mistakes", start, start + len(text), {"text": text, "labels": [kind]}, origin)]
    if explanation:
        out.append(_region(rid, "mistake_explanation", start, start + len(text), {"text": [explanation]}, origin))
    return out


def _choice(name: str, value: str, origin: str = "manual") -> dict:
    return {
        "value": {"choices": [value]},
        "id": f"{name}-choice",
        "from_name": name,
        "to_name": "response",
        "type": "choices",
        "origin": origin,
    }


def _accepted(task) -> list[dict]:
    """The task's pre-annotation as submitted unchanged (the editor marks those results ``prediction``)."""
    return [{**r, "origin": "prediction"} for r in task.predictions[0].result]


def _annotate(url: str, token: str, by_item: dict, plan: dict) -> None:
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=url, api_key=token)
    for item_id, (results, cancelled) in plan.items():
        task = by_item[item_id]
        client.annotations.create(id=task.id, result=results, was_cancelled=cancelled, lead_time=12.5)


def _tasks(url: str, token: str, project: int) -> dict:
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=url, api_key=token)
    return {t.data["item_id"]: t for t in client.tasks.list(project=project, fields="all")}


# ---------------------------------------------------------------- the test


def _sample_and_push(tmp_path, url, capsys) -> int:
    assert label_sample(tmp_path / "sample") == 0
    args = ["label", "export", str(tmp_path / "sample"), "--predictions", str(DATA / "judge.jsonl")]
    assert main([*args, "--out", str(tmp_path / "tasks"), "--url", url, "--title", "gold set"]) == 0
    out = capsys.readouterr().out
    assert "Label Studio: project" in out and "with 10 task(s)" in out
    manifest = json.loads((tmp_path / "tasks" / "manifest.json").read_text())
    return manifest["label_studio"]["project"]


def _plans(tasks: dict) -> tuple[dict, dict]:
    r02 = tasks["q02"].data["response"]
    alice = {
        "q00": (_accepted(tasks["q00"]), False),
        "q02": (
            _accepted(tasks["q02"])
            + _span(
                "Xk2-roof", r02, "next to the roof garden", "Evident Baseless Info", "No roof garden in the context."
            ),
            False,
        ),
        "q03": ([_choice("groundedness", "Clean"), _choice("relevance", "Relevant")], False),
        "q10": (_accepted(tasks["q10"]), False),
        "q06": (_accepted(tasks["q06"]), False),
        "q01": ([], True),  # skipped
    }
    r00 = tasks["q00"].data["response"]
    bob = {
        "q00": (
            _span("bob-1", r00, "10 am", "Evident Conflict")
            + [_choice("groundedness", "Hallucinated"), _choice("relevance", "Relevant")],
            False,
        ),
        "q02": (
            _span("bob-2", r02, "top floor", "Evident Conflict")
            + [_choice("groundedness", "Hallucinated"), _choice("relevance", "Relevant")],
            False,
        ),
        "q03": ([_choice("groundedness", "Clean"), _choice("relevance", "Relevant")], False),
        "q10": ([_choice("groundedness", "Clean"), _choice("relevance", "Relevant")], False),  # the disagreement
    }
    return alice, bob


EXPECTED = {
    "q00": {
        "relevance": {"mistake": False, "explanation": ""},
        "groundedness": {
            "mistake": True,
            "mistakes": [{"text": "10 am", "type": "Evident Conflict", "explanation": "The context says 9 am."}],
        },
        "corrected_response": "The museum opens at 9 am.",
    },
    "q02": {
        "relevance": {"mistake": False, "explanation": ""},
        "groundedness": {
            "mistake": True,
            "mistakes": [
                {"text": "top floor", "type": "Evident Conflict", "explanation": "The cafe is on the ground floor."},
                {
                    "text": "next to the roof garden",
                    "type": "Evident Baseless Info",
                    "explanation": "No roof garden in the context.",
                },
            ],
        },
        "corrected_response": None,
    },
    "q03": {
        "relevance": {"mistake": False, "explanation": ""},
        "groundedness": {"mistake": False, "mistakes": []},
        "corrected_response": None,
    },
    "q06": {
        "relevance": {"mistake": True, "explanation": "It talks about the weather."},
        "groundedness": {"mistake": False, "mistakes": []},
        "corrected_response": None,
    },
    "q10": {
        "relevance": {"mistake": False, "explanation": ""},
        "groundedness": {
            "mistake": True,
            "mistakes": [
                {
                    "text": "a golf course",
                    "type": "Evident Baseless Info",
                    "explanation": "No golf course in the context.",
                }
            ],
        },
        "corrected_response": None,
    },
}


def _gold(path: Path) -> dict:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_round_trip_through_a_real_label_studio(label_studio, tmp_path, monkeypatch, capsys):
    server = label_studio
    tokens = {name: server.person(f"{name}@example.com", f"{name}-pass-1234") for name in ("alice", "bob")}
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", tokens["alice"])
    project = _sample_and_push(tmp_path, server.url, capsys)

    tasks = _tasks(server.url, tokens["alice"], project)
    assert sorted(tasks) == sorted(
        json.loads(l)["id"] for l in (tmp_path / "sample" / "sample.jsonl").read_text().splitlines()
    )
    assert [len(t.predictions) for t in tasks.values()].count(1) == 9  # q11's verdict did not parse
    alice, bob = _plans(tasks)
    _annotate(server.url, tokens["alice"], tasks, alice)
    _annotate(server.url, tokens["bob"], tasks, bob)

    # The export a person downloads (Export > JSON), imported from the file ...
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=server.url, api_key=tokens["bob"])
    export = tmp_path / "export.json"
    export.write_bytes(
        b"".join(client.projects.exports.download_sync(project, export_type="JSON", download_all_tasks=True))
    )
    assert (
        main(
            [
                "label",
                "import",
                str(export),
                "--sample",
                str(tmp_path / "sample"),
                "--out",
                str(tmp_path / "gold.jsonl"),
            ]
        )
        == 0
    )
    # ... and pulled by mixft itself.
    pulled = tmp_path / "pulled" / "gold.jsonl"
    args = ["label", "import", "--url", server.url, "--project", str(project), "--sample", str(tmp_path / "sample")]
    assert main([*args, "--out", str(pulled)]) == 0
    printed = capsys.readouterr()

    gold, gold_pulled = _gold(tmp_path / "gold.jsonl"), _gold(pulled)
    assert sorted(gold) == ["q00", "q02", "q03", "q06"]  # q10: a tie between two annotators, left out
    for item_id, row in gold.items():
        assert row["verdict"] == EXPECTED[item_id], item_id
        assert gold_pulled[item_id]["verdict"] == row["verdict"]
        assert row["annotation"]["task_id"] == tasks[item_id].id and row["annotation"]["created_at"]
        assert row["annotation"]["annotator"] == f"user {row['annotation']['annotator_id']}"
        assert gold_pulled[item_id]["annotation"]["annotator"] == "alice@example.com"  # the server knows the emails

    summary = json.loads((pulled.parent / "gold.jsonl.manifest.json").read_text())["summary"]
    assert summary["annotations"] == 9 and summary["annotations_cancelled"] == 1
    assert [d["id"] for d in summary["disagreements"]] == ["q10"]
    assert summary["disagreements"][0]["fields"] == ["hallucinated"]
    assert summary["left_out"] == [{"id": "q10", "why": "tie (majority)"}]
    assert [t["item_id"] for t in summary["tasks_skipped"]] == ["q01"]
    assert sorted(t["item_id"] for t in summary["tasks_unlabeled"]) == ["q04", "q07", "q08", "q11"]
    (pair,) = summary["agreement"]
    assert pair["annotators"] == ["alice@example.com", "bob@example.com"] and pair["items"] == 4
    assert pair["hallucinated"]["kappa"]["value"] == pytest.approx(0.5)
    assert pair["hallucinated"]["agreement"]["numerator"] == 3
    assert pair["irrelevant"]["kappa"]["value"] is None  # both said "relevant" to all four
    spans = pair["mistakes"]
    assert spans["char_iou"] == pytest.approx(14 / 50) and spans["span_f1"] == pytest.approx(2 / 3)
    # What docs/labeling.md shows.
    for line in (
        "  alice@example.com and bob@example.com, 4 shared item(s):",
        "    hallucinated: agree on 3/4 (75.0%), kappa 0.50 [-0.35, 0.90]",
        "    irrelevant: agree on 4/4 (100.0%), kappa undefined: both annotators gave the same answer to all 4 items",
        "    mistake spans (3 item(s) with spans, 4 and 2 spans): character overlap (IoU) 0.28, same type 1.00, span F1 0.67",
        "  'q10' (hallucinated): alice@example.com: hallucinated, 1 span(s); bob@example.com: clean, 0 span(s) -> left out: tie (majority)",
    ):
        assert line in printed.out.splitlines(), (line, printed.out)

    # --resolve first keeps q10 with the earlier annotation (alice's); the token is written nowhere.
    first = tmp_path / "first.jsonl"
    assert (
        main(
            [
                "label",
                "import",
                str(export),
                "--sample",
                str(tmp_path / "sample"),
                "--out",
                str(first),
                "--resolve",
                "first",
            ]
        )
        == 0
    )
    assert _gold(first)["q10"]["verdict"] == EXPECTED["q10"]
    for token in tokens.values():
        for f in tmp_path.rglob("*"):
            if f.is_file():
                assert token not in f.read_text(errors="replace"), f
        assert token not in printed.out + printed.err
