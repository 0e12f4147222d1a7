"""The fixed sets of values mixft takes, as Enums: the one list of each.

The library checks a value against its Enum (``values(Enum)``); the CLI declares its options with
them, so ``--help`` lists them and the parser refuses anything else. Each member's value is the
string the library takes. Only the standard library is imported here: ``mixft --help`` stays light.
"""

from __future__ import annotations

from enum import StrEnum


def values(choices: type[StrEnum]) -> tuple[str, ...]:
    """The member values of ``choices`` as plain strings, in declaration order."""
    return tuple(m.value for m in choices)


class Task(StrEnum):
    """Which model a config or a training run is for."""

    rg = "rg"
    tc = "tc"


class InputFormat(StrEnum):
    """Formats ``prepare rg`` reads."""

    jsonl = "jsonl"
    json = "json"
    csv = "csv"
    parquet = "parquet"


class TcInputFormat(StrEnum):
    """Formats ``prepare tc`` reads: those of ``prepare rg`` and RAGTruth QA."""

    jsonl = "jsonl"
    json = "json"
    csv = "csv"
    parquet = "parquet"
    ragtruth = "ragtruth"


class Corrections(StrEnum):
    """Where ``prepare tc`` takes ``corrected_response`` from."""

    input = "input"
    from_clean = "from-clean"


class Backend(StrEnum):
    """Where ``generate`` / ``judge`` run the model (each registered in ``backends``)."""

    hf = "hf"
    openai = "openai"


class EndpointMode(StrEnum):
    """Which endpoint of an OpenAI-compatible server the openai backend calls."""

    completions = "completions"
    chat = "chat"


class GeneratePrompt(StrEnum):
    """How ``generate`` prompts the model: the training prompt, or a chat turn for raw instruct models."""

    rg = "rg"
    chat = "chat"


class JudgePrompt(StrEnum):
    """How ``judge`` prompts the model: the training prompt, or the same text as one chat turn."""

    tc = "tc"
    chat = "chat"


class Unparsed(StrEnum):
    """What ``eval pipeline`` does with a checker output that did not parse."""

    reject = "reject"
    accept = "accept"


class IntervalMethod(StrEnum):
    """Interval for proportions (each implemented in ``eval.stats.INTERVAL_METHODS``)."""

    wilson = "wilson"
    clopper_pearson = "clopper-pearson"


class GroupField(StrEnum):
    """Breakdowns of ``eval rg --by``."""

    source = "source"
    model = "model"


class DemoModel(StrEnum):
    """Which model ``mixft demo`` runs: a real 135M instruct model, or a random tiny Mixtral (each scaled in ``demo.SCALES``)."""

    smollm2 = "smollm2"
    tiny = "tiny"
