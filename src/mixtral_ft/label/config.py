"""The Label Studio labeling config mixft exports (:func:`labeling_config`), and the names the importer
reads back (:func:`config_problems` checks a project's config has them).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

from mixtral_ft.tc.verdict import MISTAKE_TYPES

CONFIG_VERSION = 1

# Data fields of a task (``data``): the item's id and what the interface shows.
ITEM_ID = "item_id"
CONTEXT, QUESTION, RESPONSE, JUDGE_NOTES = "context", "question", "response", "judge_notes"

# Control tags: name -> the result ``type`` Label Studio writes for it.
MISTAKES = "mistakes"
MISTAKE_EXPLANATION = "mistake_explanation"
GROUNDEDNESS = "groundedness"
RELEVANCE = "relevance"
RELEVANCE_EXPLANATION = "relevance_explanation"
CORRECTED = "corrected_response"
CONTROLS = {
    MISTAKES: "labels",
    MISTAKE_EXPLANATION: "textarea",
    GROUNDEDNESS: "choices",
    RELEVANCE: "choices",
    RELEVANCE_EXPLANATION: "textarea",
    CORRECTED: "textarea",
}
HALLUCINATED, CLEAN = "Hallucinated", "Clean"
RELEVANT, IRRELEVANT = "Relevant", "Irrelevant"
CHOICES = {GROUNDEDNESS: (HALLUCINATED, CLEAN), RELEVANCE: (RELEVANT, IRRELEVANT)}

_COLORS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b")


def labeling_config(judge_notes: bool = False) -> str:
    """The labeling config XML; ``judge_notes`` adds the block that shows the judge's spans that
    were not found in the response (exports with pre-annotations).

    The interface shows the context and the question, then the response, on which the annotator
    selects each mistaken span and gives it one of the four RAGTruth mistake types (``Labels``); a
    text box per span holds the explanation (``TextArea perRegion``). Below: the hallucinated/clean
    decision and the relevance decision (``Choices``, both required), the relevance explanation and
    the corrected response (``TextArea``). With pre-annotations, the judge's spans that are not in the
    response text are shown under "Judge's notes".

    Spans are character offsets in the response, counted in code points as Python counts them: the
    Label Studio editor counts offsets in code points (``libs/editor/src/tags/object/RichText/model.js``
    in Label Studio 1.23), and the ``white-space: pre-wrap`` style keeps every space in the display
    and in the offsets (Label Studio's ``Text`` tag documentation).
    """
    labels = "\n".join(
        f"    <Label value={quoteattr(t)} background={quoteattr(c)}/>" for t, c in zip(MISTAKE_TYPES, _COLORS)
    )
    notes = (
        '  <Header value="Judge\'s notes (its spans that are not in the response)"/>\n'
        f'  <Text name="{JUDGE_NOTES}" value="${JUDGE_NOTES}" selectionEnabled="false"/>\n'
        if judge_notes
        else ""
    )
    return f"""<View>
  <Style>.htx-text {{ white-space: pre-wrap; }}</Style>
  <Header value="Context"/>
  <Text name="{CONTEXT}" value="${CONTEXT}" selectionEnabled="false"/>
  <Header value="Question"/>
  <Text name="{QUESTION}" value="${QUESTION}" selectionEnabled="false"/>
  <Header value="Response: select each span the context does not support, and label it"/>
  <Labels name="{MISTAKES}" toName="{RESPONSE}" choice="single">
{labels}
  </Labels>
  <Text name="{RESPONSE}" value="${RESPONSE}"/>
  <View visibleWhen="region-selected">
    <Header value="Why is the selected span a mistake?"/>
    <TextArea name="{MISTAKE_EXPLANATION}" toName="{RESPONSE}" perRegion="true" editable="true" maxSubmissions="1" rows="2"/>
  </View>
{notes}  <Header value="Is the response grounded in the context?"/>
  <Choices name="{GROUNDEDNESS}" toName="{RESPONSE}" choice="single" required="true" showInline="true">
    <Choice value="{HALLUCINATED}"/>
    <Choice value="{CLEAN}"/>
  </Choices>
  <Header value="Does the response answer the question?"/>
  <Choices name="{RELEVANCE}" toName="{RESPONSE}" choice="single" required="true" showInline="true">
    <Choice value="{RELEVANT}"/>
    <Choice value="{IRRELEVANT}"/>
  </Choices>
  <TextArea name="{RELEVANCE_EXPLANATION}" toName="{RESPONSE}" editable="true" maxSubmissions="1" rows="2" placeholder="If it does not answer the question: why (optional)"/>
  <Header value="Corrected response (optional)"/>
  <TextArea name="{CORRECTED}" toName="{RESPONSE}" editable="true" maxSubmissions="1" rows="3"/>
</View>
"""


def config_problems(xml: str) -> list[str]:
    """Why a project's labeling config is not one the importer can read (empty: it is).

    The importer reads results by control name and type, so the check is on those: every
    control of mixft's config is there with its tag, its ``toName`` and its choices or labels."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        return [f"the labeling config is not valid XML ({e})"]
    tags = {el.get("name"): el for el in root.iter() if el.get("name")}
    want = {"labels": "Labels", "textarea": "TextArea", "choices": "Choices"}
    problems = []
    for name, kind in CONTROLS.items():
        el = tags.get(name)
        if el is None:
            problems.append(f"no control named {name!r}")
            continue
        if el.tag != want[kind] or el.get("toName") != RESPONSE:
            problems.append(
                f"control {name!r} is <{el.tag} toName={el.get('toName')!r}>, not <{want[kind]} toName={RESPONSE!r}>"
            )
            continue
        values = tuple(c.get("value") for c in el if c.tag in ("Choice", "Label"))
        expected = CHOICES.get(name) or (MISTAKE_TYPES if name == MISTAKES else ())
        if expected and set(values) != set(expected):
            problems.append(f"control {name!r} offers {', '.join(map(str, values))}, not {', '.join(expected)}")
    for name in (CONTEXT, QUESTION, RESPONSE):
        if name not in tags:
            problems.append(f"no <Text name={name!r}> object")
    return problems
