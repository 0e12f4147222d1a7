"""RG prompts at inference, the same as in training: the ``context_qa.load_v2`` prompt fed alone, the
model generating ``Answer: …`` itself (:func:`rg_prompt`, :func:`strip_answer_prefix`), and the chat
turn of ``--prompt chat`` for raw instruct models (:func:`chat_messages`).
"""

from __future__ import annotations

import re

from mixtral_ft.choices import GeneratePrompt, values
from mixtral_ft.data.prompts import context_qa_v2_prompt, join_context

PROMPT_STYLES = values(GeneratePrompt)
CHAT_INSTRUCTION = (
    "Answer the question using only the information in the context. "
    "If the context does not contain the answer, say that you do not know."
)

_PREFIX_RE = re.compile(r"^\s*Answer:[ \t]?")


def rg_prompt(context: str | list[str], question: str) -> str:
    """The ``context_qa.load_v2`` prompt, byte for byte as ``prepare rg`` + Axolotl build it.

    Training (Axolotl ``type: context_qa.load_v2``) tokenizes the prompt
    ``"Context: " + context + "\\nQuestion: " + question + "\\n"`` with BOS and no EOS, and the
    response ``"Answer: " + answer`` separately (BOS stripped, EOS added). So at inference the
    prompt ids alone are fed and the model itself generates ``Answer: …``; the prefix is then
    stripped from the stored response. Supplying ``Answer:`` in the prompt instead would not
    reproduce the training ids: the response was tokenized on its own, so its first token is
    not what tokenizing ``"…\\nAnswer:"`` as one string gives.

    ``--prompt chat`` is for raw instruct models (the report's baseline): the same context and
    question in one user turn with a short instruction, rendered by the model's chat template.
    """
    return context_qa_v2_prompt(join_context(context), question)


def chat_messages(context: str | list[str], question: str, instruction: str = CHAT_INSTRUCTION) -> list[dict[str, str]]:
    """One user turn for ``--prompt chat``."""
    content = f"{instruction}\n\nContext: {join_context(context)}\n\nQuestion: {question}"
    return [{"role": "user", "content": content}]


def strip_answer_prefix(text: str) -> tuple[str, bool]:
    """``("Paris.", True)`` for ``"Answer: Paris."``. A response without the prefix is kept
    whole (only surrounding whitespace trimmed) and reported with ``False`` so a model that
    drifts from the trained format shows up in the output instead of being silently cut."""
    m = _PREFIX_RE.match(text)
    if m:
        return text[m.end() :].strip(), True
    return text.strip(), False
