"""The verdict format: strict validation, canonical text, the parser on real-looking model
outputs, and agreement with the shipped JSON Schema."""

from __future__ import annotations

import copy
import json
from importlib import resources

import jsonschema
import pytest

from mixtral_ft.tc.verdict import (
    VERDICT_VERSION,
    Groundedness,
    Mistake,
    Relevance,
    Verdict,
    VerdictError,
    clean_verdict,
    is_hallucinated,
    parse_verdict,
    verdict_from_dict,
    verdict_to_text,
)

CLEAN = {
    "relevance": {"mistake": False, "explanation": "It answers the question."},
    "groundedness": {"mistake": False, "mistakes": []},
    "corrected_response": None,
}
HALLU = {
    "relevance": {"mistake": False, "explanation": ""},
    "groundedness": {
        "mistake": True,
        "mistakes": [
            {"text": "costs $20 per month", "type": "Evident Conflict", "explanation": "The context says $15."}
        ],
    },
    "corrected_response": "The plan costs $15 per month.",
}


@pytest.fixture(scope="module")
def schema():
    text = resources.files("mixtral_ft.resources").joinpath("verdict.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def schema_ok(schema, obj) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(obj)


def test_version_and_round_trip():
    assert VERDICT_VERSION == 1
    for obj in (CLEAN, HALLU):
        v = verdict_from_dict(obj)
        assert v.to_dict() == obj
        assert list(v.to_dict()) == ["relevance", "groundedness", "corrected_response"]
        assert verdict_from_dict(json.loads(verdict_to_text(v))) == v


def test_canonical_text_is_one_line_fixed_order_unicode_kept():
    v = Verdict(
        Relevance(False, "Répond à la question."),
        Groundedness(True, (Mistake("“20 €”", "Subtle Conflict", "15 €"),)),
        None,
    )
    text = verdict_to_text(v)
    assert "\n" not in text and "Répond" in text and "\\u" not in text
    assert text.index('"relevance"') < text.index('"groundedness"') < text.index('"corrected_response"')
    assert text.index('"text"') < text.index('"type"') < text.index('"explanation": "15')
    assert text == verdict_to_text(verdict_from_dict(json.loads(text)))


def test_canonical_text_validates_against_schema(schema):
    cases = [
        clean_verdict(),
        clean_verdict("fixed"),
        verdict_from_dict(HALLU),
        Verdict(Relevance(True, 'Off topic: "quotes" and \\ backslash'), Groundedness(True, ()), None),
    ]
    for v in cases:
        assert schema_ok(schema, json.loads(verdict_to_text(v)))


def test_is_hallucinated_definition():
    rel_only = verdict_from_dict({**CLEAN, "relevance": {"mistake": True, "explanation": "Off topic."}})
    assert is_hallucinated(verdict_from_dict(HALLU)) is True
    assert is_hallucinated(verdict_from_dict(CLEAN)) is False
    assert is_hallucinated(rel_only) is False
    assert is_hallucinated(rel_only, count_relevance=True) is True


def test_unlocalized_mistake_is_allowed():
    v = verdict_from_dict({**CLEAN, "groundedness": {"mistake": True, "mistakes": []}})
    assert is_hallucinated(v)


def test_dataclass_rejects_contradiction():
    with pytest.raises(VerdictError):
        Verdict(Relevance(False, ""), Groundedness(False, (Mistake("a", "b", "c"),)))


def _with(path: str, value):
    obj = copy.deepcopy(HALLU)
    *parents, last = path.split(".")
    node = obj
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return obj


_DELETE = object()

# (case name, object, substring of the error) — every one must be rejected by both the
# validator and the schema.
INVALID = [
    ("not an object", ["relevance"], "expected an object"),
    ("missing top key", _with("corrected_response", _DELETE), "missing key(s) 'corrected_response'"),
    ("missing nested key", _with("groundedness.mistakes", _DELETE), "groundedness: missing key(s) 'mistakes'"),
    ("extra top key", {**HALLU, "hallucinated": True}, "unexpected key(s) 'hallucinated'"),
    ("extra mistake key", _with("groundedness.mistakes.0.severity", "high"), "unexpected key(s) 'severity'"),
    ("string boolean", _with("groundedness.mistake", "true"), "groundedness.mistake: expected a boolean"),
    ("int boolean", _with("relevance.mistake", 0), "relevance.mistake: expected a boolean"),
    ("null boolean", _with("relevance.mistake", None), "expected a boolean, got null"),
    ("explanation not string", _with("relevance.explanation", 3), "relevance.explanation: expected a string"),
    ("mistakes not list", _with("groundedness.mistakes", {"text": "a"}), "expected an array"),
    ("mistake item not object", _with("groundedness.mistakes", ["costs $20"]), "mistakes[0]: expected an object"),
    ("empty mistake text", _with("groundedness.mistakes.0.text", "  "), "mistakes[0].text: must not be empty"),
    ("empty mistake type", _with("groundedness.mistakes.0.type", ""), "mistakes[0].type: must not be empty"),
    ("type not string", _with("groundedness.mistakes.0.type", ["Evident Conflict"]), "expected a string"),
    ("corrected not string", _with("corrected_response", False), "corrected_response: expected a string or null"),
    ("contradiction", _with("groundedness.mistake", False), "mistake is false but 1 mistake(s) are listed"),
    ("relevance not object", _with("relevance", "fine"), "relevance: expected an object, got string"),
]


@pytest.mark.parametrize("name,obj,message", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_rejected_by_validator_and_schema(schema, name, obj, message):
    with pytest.raises(VerdictError) as e:
        verdict_from_dict(obj)
    assert message in str(e.value)
    assert not schema_ok(schema, obj)
    result = parse_verdict("```json\n" + json.dumps(obj) + "\n```")
    assert not result.ok and result.verdict is None
    if isinstance(obj, dict):
        assert message in result.error


VALID = [
    ("clean", CLEAN),
    ("hallucinated", HALLU),
    ("unlocalized", {**CLEAN, "groundedness": {"mistake": True, "mistakes": []}}),
    ("relevance only", {**CLEAN, "relevance": {"mistake": True, "explanation": ""}}),
    ("corrected on clean", {**CLEAN, "corrected_response": "Same answer."}),
    ("unknown mistake type", _with("groundedness.mistakes.0.type", "Outdated Info")),
    ("empty mistake explanation", _with("groundedness.mistakes.0.explanation", "")),
    (
        "key order shuffled",
        {
            "corrected_response": None,
            "groundedness": {"mistakes": [], "mistake": False},
            "relevance": {"explanation": "x", "mistake": False},
        },
    ),
]


@pytest.mark.parametrize("name,obj", VALID, ids=[c[0] for c in VALID])
def test_valid_accepted_by_validator_and_schema(schema, name, obj):
    assert schema_ok(schema, obj)
    v = verdict_from_dict(obj)
    assert parse_verdict(json.dumps(obj)).verdict == v


def test_extra_keys_can_be_ignored_on_request():
    obj = {**HALLU, "confidence": 0.9, "groundedness": {**HALLU["groundedness"], "note": "x"}}
    assert not parse_verdict(json.dumps(obj)).ok
    r = parse_verdict(json.dumps(obj), allow_extra_keys=True)
    assert r.ok and r.verdict == verdict_from_dict(HALLU)


# ---------------------------------------------------------------------------- parser

HALLU_TEXT = json.dumps(HALLU)
PRETTY = json.dumps(HALLU, indent=2)


@pytest.mark.parametrize(
    "text",
    [
        HALLU_TEXT,
        " \n" + HALLU_TEXT + "\n\n",
        "```json\n" + PRETTY + "\n```",
        "```\n" + HALLU_TEXT + "\n```",
        "Here is my verdict:\n```json\n" + PRETTY + "\n```\nLet me know if you need anything else.",
        "After checking the context, the price is wrong. " + HALLU_TEXT + " That is all.",
        "Verdict: " + HALLU_TEXT + "</s>",
        # the same verdict repeated (a model that echoes itself) is not ambiguous
        HALLU_TEXT + "\n\nFinal answer:\n" + PRETTY,
        # braces in the prose before the object do not confuse the scan
        'I checked {the context} and {"note": 1} then:\n' + HALLU_TEXT,
        # key order does not matter
        json.dumps(
            {
                "corrected_response": HALLU["corrected_response"],
                "groundedness": HALLU["groundedness"],
                "relevance": HALLU["relevance"],
            }
        ),
    ],
    ids=[
        "bare",
        "whitespace",
        "fenced-json",
        "fenced-plain",
        "fence-with-prose",
        "inline-prose",
        "eos-suffix",
        "repeated",
        "braces-in-prose",
        "key-order",
    ],
)
def test_parser_accepts_real_looking_outputs(text):
    r = parse_verdict(text)
    assert r.ok, r.error
    assert r.verdict == verdict_from_dict(HALLU)
    assert r.raw == text and r.error is None


def test_parser_nested_quotes_braces_and_unicode():
    obj = copy.deepcopy(HALLU)
    obj["groundedness"]["mistakes"][0] = {
        "text": 'He said "use {token} here" — 東京 🚀',
        "type": "Evident Baseless Info",
        "explanation": 'Context has no "token"; see \\path\\ and {braces} and ``` fences',
    }
    for text in (
        json.dumps(obj),
        json.dumps(obj, ensure_ascii=False),
        "```json\n" + json.dumps(obj, ensure_ascii=False, indent=1) + "\n```",
    ):
        r = parse_verdict(text)
        assert r.ok, r.error
        assert r.verdict.groundedness.mistakes[0].text == 'He said "use {token} here" — 東京 🚀'


@pytest.mark.parametrize(
    "text,error",
    [
        ("", "empty output"),
        ("   \n", "empty output"),
        ("The response is grounded.", "no JSON object"),
        (HALLU_TEXT[: len(HALLU_TEXT) // 2], "truncated output or invalid JSON"),
        (PRETTY[:-3], "truncated output or invalid JSON"),
        ("```json\n" + HALLU_TEXT[:-1] + "\n```", "truncated output or invalid JSON"),
        ('{"mistake": false, "explanation": "only a fragment"}', "no complete JSON object with verdict keys"),
        ("{'relevance': {'mistake': False}}", "truncated output or invalid JSON"),  # Python repr, not JSON
        (HALLU_TEXT.replace("true", "True"), "truncated output or invalid JSON"),
        (HALLU_TEXT.replace('"mistake": true', '"mistake": "yes"'), "groundedness.mistake: expected a boolean"),
        (
            HALLU_TEXT.replace('"corrected_response"', '"corrected_response": null, "corrected_response"'),
            "duplicate key 'corrected_response'",
        ),
        (json.dumps(CLEAN) + "\n" + HALLU_TEXT, "2 different verdicts"),
        (
            json.dumps({**CLEAN, "groundedness": {"mistake": False, "mistakes": HALLU["groundedness"]["mistakes"]}}),
            "mistake is false but 1 mistake(s) are listed",
        ),
    ],
    ids=[
        "empty",
        "blank",
        "prose-only",
        "truncated-half",
        "truncated-pretty",
        "truncated-fenced",
        "fragment",
        "python-repr",
        "python-bools",
        "string-bool",
        "duplicate-key",
        "two-verdicts",
        "contradiction",
    ],
)
def test_parser_failures_keep_raw_text(text, error):
    r = parse_verdict(text)
    assert not r.ok and r.verdict is None
    assert error in r.error
    assert r.raw == text


def test_parser_is_pure():
    text = "```json\n" + PRETTY + "\n```"
    assert parse_verdict(text) == parse_verdict(text)
    assert not parse_verdict(None).ok  # type: ignore[arg-type]
