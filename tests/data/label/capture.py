"""How tests/data/label/export.json was made: a real Label Studio export, with annotations from the
real labeling editor (clicks in headless Chromium) and from the SDK.

    LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false SENTRY_DSN= FRONTEND_SENTRY_DSN= \\
      .venv-ls/bin/label-studio start --no-browser --internal-host 127.0.0.1 --port 18081 --data-dir /tmp/ls-capture
    python tests/data/label/capture.py http://127.0.0.1:18081 tests/data/label/export.json

on a fresh data directory (user and task ids then start at 1). It signs up alice and carol,
samples 10 of population.jsonl (seed 3), exports them with judge.jsonl's verdicts as
pre-annotations into a new project (``mixft label export --url``), then:

- alice, in the editor: on q02 selects "next to the roof garden" (after an emoji: the offsets are
  the editor's own) with the label "Evident Baseless Info", types why in the span's text box and
  submits; on q00 submits the
  pre-annotation unchanged; then in "Label All Tasks" presses Skip on the first task it shows (q11);
- carol, through the SDK: q02 hallucinated with "top floor" only; q00 clean (a disagreement with
  alice); q03 clean; q10 hallucinated with "a golf course", an explanation and a corrected response;

and downloads the project's JSON export (what Export > JSON gives). Needs the [label] extra,
selenium and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
SHOT = Path(tempfile.gettempdir()) / "label-studio-editor.png"  # the editor just before alice submits q02
PEOPLE = {"alice": "alice-pass-1234", "carol": "carol-pass-1234"}


def sign_up(url: str, name: str) -> str:
    with httpx.Client(base_url=url, timeout=60) as web:
        web.get("/user/signup/")
        form = {
            "email": f"{name}@example.com",
            "password": PEOPLE[name],
            "csrfmiddlewaretoken": web.cookies["csrftoken"],
        }
        assert web.post("/user/signup/", data=form, headers={"Referer": f"{url}/user/signup/"}).status_code == 302
        r = web.post("/api/token/", headers={"X-CSRFToken": web.cookies["csrftoken"], "Referer": url})
        assert r.status_code == 201, r.text
        return r.json()["token"]


def mixft(*args: str, env: dict | None = None) -> None:
    subprocess.run([sys.executable, "-m", "mixtral_ft.cli.main", *args], check=True, env=env)


def editor(url: str, project: int, tasks: dict) -> None:
    """alice's clicks in the labeling editor."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(flag)
    d = webdriver.Chrome(options=options)
    wait = WebDriverWait(d, 120)
    try:
        d.get(f"{url}/user/login/")
        wait.until(ec.presence_of_element_located((By.NAME, "email"))).send_keys("alice@example.com")
        d.find_element(By.NAME, "password").send_keys(PEOPLE["alice"])
        d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        time.sleep(3)

        def open_task(item: str) -> None:
            d.get(f"{url}/projects/{project}/data?task={tasks[item]}")
            wait.until(ec.presence_of_element_located((By.XPATH, "//*[text()='Evident Baseless Info']")))
            time.sleep(5)

        def click(text: str) -> None:
            wait.until(ec.element_to_be_clickable((By.XPATH, f"//button[normalize-space()='{text}']"))).click()
            time.sleep(5)

        open_task("q02")
        d.find_element(By.XPATH, "//*[text()='Evident Baseless Info']").click()
        d.execute_script(SELECT, "next to the roof garden")
        time.sleep(2)
        why = "//*[text()='Why is the selected span a mistake?']"
        if not any(e.is_displayed() for e in d.find_elements(By.XPATH, why)):  # select the new region
            d.find_element(By.XPATH, "//span[text()='next to the roof garden']").click()
        wait.until(ec.visibility_of_element_located((By.XPATH, why)))
        box = d.find_element(By.XPATH, f"{why}/following::textarea[1]")  # the span's own text box
        box.send_keys("No roof garden in the context.")
        box.send_keys(Keys.SHIFT, Keys.ENTER)
        time.sleep(2)
        d.save_screenshot(str(SHOT))
        click("Submit")
        open_task("q00")
        click("Submit")
        d.get(f"{url}/projects/{project}/data?labeling=1")  # "Label All Tasks": the stream has Skip
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[text()='Evident Baseless Info']")))
        time.sleep(5)
        click("Skip")
    finally:
        d.quit()


# Select ``word`` in the (last) visible text node holding it and release the mouse there, as a drag does.
SELECT = """
const word = arguments[0];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
let node, target = null;
while ((node = walker.nextNode())) {
  const el = node.parentElement;
  if (el && el.offsetParent !== null && node.textContent.includes(word)) target = node;
}
const i = target.textContent.indexOf(word);
const range = document.createRange();
range.setStart(target, i); range.setEnd(target, i + word.length);
const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
const box = range.getBoundingClientRect();
const el = target.parentElement;  // the editor re-renders the text once the region exists
for (const type of ['mousedown', 'mouseup', 'click'])
  el.dispatchEvent(new MouseEvent(type, {bubbles: true, clientX: box.right, clientY: box.top + 2}));
"""


def carol(url: str, token: str, tasks: dict, responses: dict) -> None:
    from label_studio_sdk import LabelStudio

    def span(rid, item, text, kind, why=None):
        s = responses[item].index(text)
        value = {"start": s, "end": s + len(text)}
        out = [
            {
                "id": rid,
                "from_name": "mistakes",
                "to_name": "response",
                "type": "labels",
                "origin": "manual",
                "value": {**value, "text": text, "labels": [kind]},
            }
        ]
        if why:
            out.append(
                {
                    "id": rid,
                    "from_name": "mistake_explanation",
                    "to_name": "response",
                    "type": "textarea",
                    "origin": "manual",
                    "value": {**value, "text": [why]},
                }
            )
        return out

    def pick(name, value):
        return {
            "id": f"c-{name}",
            "from_name": name,
            "to_name": "response",
            "type": "choices",
            "origin": "manual",
            "value": {"choices": [value]},
        }

    def box(name, text):
        return {
            "id": f"c-{name}",
            "from_name": name,
            "to_name": "response",
            "type": "textarea",
            "origin": "manual",
            "value": {"text": [text]},
        }

    plan = {
        "q02": span("c2", "q02", "top floor", "Evident Conflict")
        + [pick("groundedness", "Hallucinated"), pick("relevance", "Relevant")],
        "q00": [pick("groundedness", "Clean"), pick("relevance", "Relevant")],
        "q03": [pick("groundedness", "Clean"), pick("relevance", "Relevant")],
        "q10": span(
            "c10", "q10", "a golf course", "Evident Baseless Info", "The context lists 40 rooms and a spa only."
        )
        + [
            pick("groundedness", "Hallucinated"),
            pick("relevance", "Relevant"),
            box("corrected_response", "The hotel has 40 rooms and a spa."),
        ],
    }
    client = LabelStudio(base_url=url, api_key=token)
    for item, result in plan.items():
        client.annotations.create(id=tasks[item], result=result, lead_time=30.0)


def main(url: str, out: Path) -> None:
    import os

    from label_studio_sdk import LabelStudio

    tokens = {name: sign_up(url, name) for name in PEOPLE}
    work = Path(tempfile.mkdtemp())
    mixft("label", "sample", str(HERE / "population.jsonl"), "--n", "10", "--seed", "3", "--out", str(work / "sample"))
    env = {**os.environ, "LABEL_STUDIO_API_KEY": tokens["alice"]}
    mixft(
        "label",
        "export",
        str(work / "sample"),
        "--predictions",
        str(HERE / "judge.jsonl"),
        "--out",
        str(work / "tasks"),
        "--url",
        url,
        "--title",
        "gold set",
        env=env,
    )
    project = json.loads((work / "tasks" / "manifest.json").read_text())["label_studio"]["project"]
    client = LabelStudio(base_url=url, api_key=tokens["alice"])
    listed = list(client.tasks.list(project=project))
    tasks = {t.data["item_id"]: t.id for t in listed}
    responses = {t.data["item_id"]: t.data["response"] for t in listed}
    editor(url, project, tasks)
    carol(url, tokens["carol"], tasks, responses)
    data = b"".join(client.projects.exports.download_sync(project, export_type="JSON", download_all_tasks=True))
    out.write_bytes(data)


if __name__ == "__main__":
    main(sys.argv[1].rstrip("/"), Path(sys.argv[2]))
