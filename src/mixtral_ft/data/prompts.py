"""Prompt formats exactly as Axolotl builds them, so previews, length reports and inference
prompts match training: ``context_qa.load_v2`` for RG, and the knowledge-base context as one string.
How Axolotl builds them: docs/design/tokenization.md.
"""

from __future__ import annotations

from mixtral_ft.data.normalize import join_snippets, normalize_text

CONTEXT_QA_V2 = "context_qa.load_v2"


def context_qa_v2_prompt(context: str, question: str) -> str:
    """The masked part of a ``context_qa.load_v2`` example (also the inference prompt)."""
    return "Context: " + context + "\nQuestion: " + question + "\n"


def context_qa_v2_response(answer: str) -> str:
    """The trained part of a ``context_qa.load_v2`` example, before the EOS token."""
    return "Answer: " + answer


def join_context(context: str | list[str] | tuple[str, ...]) -> str:
    """The knowledge-base context as one string, exactly as ``prepare rg`` builds it:
    snippets normalized and joined by a blank line; a string is normalized. Used by every
    prompt built at inference (RG generation, the TC prompt) so it matches the training rows."""
    if isinstance(context, str):
        return normalize_text(context)
    if isinstance(context, (list, tuple)) and all(isinstance(s, str) for s in context):
        return join_snippets(context)
    raise TypeError(f"context must be a string or a list of strings, got {type(context).__name__}")
