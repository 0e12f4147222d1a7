"""Hostile YAML is refused wherever mixft reads YAML: --set values, user configs, profiles and
pipeline files (tests/test_pipeline.py), with one line and exit 2, before anything is written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main
from mixtral_ft.util.yamlsafe import MAX_DEPTH, UnsafeYamlError, safe_load

REPO = Path(__file__).resolve().parents[1]
# ~220 bytes that expand to 9^6 = 531,441 strings: the "billion laughs" of YAML.
BOMB = (
    '[&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"],&b [*a,*a,*a,*a,*a,*a,*a,*a,*a],'
    "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b],&d [*c,*c,*c,*c,*c,*c,*c,*c,*c],&e [*d,*d,*d,*d,*d,*d,*d,*d,*d],"
    "&f [*e,*e,*e,*e,*e,*e,*e,*e,*e]]"
)


@pytest.mark.parametrize(
    "text,message",
    [
        (BOMB, "more than 10,000 values once its aliases are expanded"),
        ("a: &a [*a]", "an alias refers to itself"),
        ("[" * 5000 + "]" * 5000, f"nested more than {MAX_DEPTH} levels deep"),
        ("x: !!python/object/apply:os.system [ls]", "tag !!python/object/apply:os.system is not allowed"),
        ("x: !!binary aGVsbG8=", "tag !!binary is not allowed"),
        ("x: !!set {a: null}", "tag !!set is not allowed"),
        ("x: !custom 1", "tag !custom is not allowed"),
    ],
)
def test_hostile_yaml_is_refused(text, message):
    with pytest.raises(UnsafeYamlError, match=re.escape(message)) as err:
        safe_load(text, "f.yml")
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_plain_yaml_loads_as_before():
    text = "base: &b {x: 1, y: [1, 2]}\nd:\n  <<: *b\n  y: 3\nlr: 2e-5\nwhen: 2024-01-01\nflag: yes\nnone: ~\n"
    import datetime

    import yaml

    assert safe_load(text) == yaml.safe_load(text)
    assert safe_load(text)["d"] == {"x": 1, "y": 3} and safe_load(text)["when"] == datetime.date(2024, 1, 1)
    assert safe_load("") is None
    with pytest.raises(yaml.YAMLError):  # a syntax error stays the caller's to word
        safe_load("a: [1, 2")


def test_every_yaml_load_in_src_goes_through_the_safe_loader():
    found = []
    for path in sorted((REPO / "src").rglob("*.py")):
        if path.name == "yamlsafe.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\byaml\.(safe_load|load|full_load|unsafe_load|load_all|safe_load_all|compose)\(", line):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not found, "YAML read without util.yamlsafe:\n" + "\n".join(found)


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        (d / name).write_text('{"id": "1", "question": "q", "context": "c", "answer": "a"}\n')
    return d


def render(tmp_path, data_dir, *extra: str) -> list[str]:
    return ["config", "render", "rg", "--data", str(data_dir), "--profile", "cpu", "--out", str(tmp_path / "x.yml"),
            "--no-validate", *extra]  # fmt: skip


def test_a_hostile_set_value_is_refused_before_config_render_writes(tmp_path, data_dir, capsys):
    assert main(render(tmp_path, data_dir, "--set", f"special_tokens={BOMB}")) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: --set special_tokens: YAML refused: more than 10,000 values once its aliases are expanded "
        "(a YAML 'billion laughs'?)"
    ]
    assert not (tmp_path / "x.yml").exists()


@pytest.mark.parametrize(
    "where,text,message",
    [
        ("rg.yml", f"special_tokens: {BOMB}\n", "YAML refused: more than 10,000 values"),
        (
            "profiles/cpu.yml",
            "adapter: lora\nseed: !!python/object/apply:os.system [touch pwned]\n",
            "YAML refused: tag !!python/object/apply:os.system is not allowed",
        ),
    ],
)
def test_a_hostile_user_config_or_profile_is_refused(tmp_path, data_dir, monkeypatch, capsys, where, text, message):
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    target = configs / where
    target.write_text(target.read_text() + text if where == "rg.yml" else text)
    monkeypatch.setenv("MIXFT_CONFIGS_DIR", str(configs))
    monkeypatch.chdir(tmp_path)
    assert main(render(tmp_path, data_dir)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    line = 1 + target.read_text().count("\n", 0, target.read_text().index(text.splitlines()[-1]))
    assert f"{target}:{line}:" in err[0]
    assert not (tmp_path / "x.yml").exists() and not (tmp_path / "pwned").exists()
