"""The TC prompt template: pinned by hash, rendered identically for training and judging."""

from __future__ import annotations

import pytest

from mixtral_ft.errors import ConfigError
from mixtral_ft.tc.prompt import (
    default_template_path,
    load_template,
    render_tc_prompt,
    template_sha256,
)

# Changing configs/prompts/tc_v1.txt changes every TC training row and invalidates trained
# checkers: make a tc_v2.txt instead, and update this hash only on purpose.
TC_V1_SHA256 = "1e0e378d63f242e48ba536b4ae99734d82e11e08d5c89dfa6736612e4b0ec218"


def test_shipped_template_is_pinned(repo_root):
    assert default_template_path() == repo_root / "configs" / "prompts" / "tc_v1.txt"
    assert template_sha256() == TC_V1_SHA256
    assert template_sha256(load_template()) == TC_V1_SHA256


def test_render_layout_and_verdict_follows_directly():
    prompt = render_tc_prompt("The plan costs $15.", "How much is the plan?", "It costs $20.")
    assert prompt.endswith(
        "### Context\nThe plan costs $15.\n\n### Question\nHow much is the plan?\n\n"
        "### Response\nIt costs $20.\n\n### Verdict\n"
    )
    assert "{context}" not in prompt and "{question}" not in prompt and "{response}" not in prompt
    for word in (
        "Relevance",
        "Groundedness",
        "Evident Conflict",
        "Subtle Conflict",
        "Evident Baseless Info",
        "Subtle Baseless Info",
        '"corrected_response"',
    ):
        assert word in prompt


def test_render_is_stable_and_single_pass():
    args = (["Snippet one {question}.", "Snippet {response} two."], "Q {context}?", "R {x} {}")
    a = render_tc_prompt(*args)
    assert a == render_tc_prompt(*args)
    assert "Snippet one {question}.\n\nSnippet {response} two." in a
    assert "### Question\nQ {context}?\n" in a and "### Response\nR {x} {}\n" in a


def test_list_context_equals_joined_string():
    assert render_tc_prompt(["a", "b"], "q", "r") == render_tc_prompt("a\n\nb", "q", "r")


def test_bad_context_type():
    with pytest.raises(TypeError):
        render_tc_prompt(["a", 3], "q", "r")  # type: ignore[list-item]


def test_custom_template_checked(tmp_path):
    good = tmp_path / "t.txt"
    good.write_text('C={context} Q={question} R={response} JSON: {"a": 1}\n', encoding="utf-8")
    t = load_template(good)
    assert render_tc_prompt("c", "q", "r", template=t) == 'C=c Q=q R=r JSON: {"a": 1}\n'
    assert template_sha256(t) != TC_V1_SHA256
    bad = tmp_path / "bad.txt"
    bad.write_text("C={context} Q={question} {question}", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_template(bad)
    assert "{question} must occur exactly once (found 2)" in str(e.value)
    assert "{response} must occur exactly once (found 0)" in str(e.value)
    with pytest.raises(ConfigError, match="not found"):
        load_template(tmp_path / "missing.txt")
