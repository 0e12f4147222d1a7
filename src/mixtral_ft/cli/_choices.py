"""Fixed sets of option values, as Enums: Typer lists them in ``--help`` and refuses anything else.

Each member's value is the string the library takes (``option.value``). The library keeps its
own tuple of valid values for callers that are not the CLI; ``tests/test_cli_choices.py``
checks that both agree. Only the standard library is imported here (``mixft --help`` stays light).
"""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    """Which model a config or a training run is for."""

    rg = "rg"
    tc = "tc"


class InputFormat(StrEnum):
    """Formats ``prepare rg`` reads (``data.readers.FORMATS``)."""

    jsonl = "jsonl"
    json = "json"
    csv = "csv"
    parquet = "parquet"


class TcInputFormat(StrEnum):
    """Formats ``prepare tc`` reads: those of ``prepare rg`` and RAGTruth QA (``tc.prepare_tc.INPUT_FORMATS``)."""

    jsonl = "jsonl"
    json = "json"
    csv = "csv"
    parquet = "parquet"
    ragtruth = "ragtruth"


class Corrections(StrEnum):
    """Where ``prepare tc`` takes ``corrected_response`` from (``tc.prepare_tc.CORRECTIONS``)."""

    input = "input"
    from_clean = "from-clean"


class Backend(StrEnum):
    """Where ``generate`` / ``judge`` run the model."""

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
    """Interval for proportions (``eval.stats.INTERVAL_METHODS``)."""

    wilson = "wilson"
    clopper_pearson = "clopper-pearson"


class GroupField(StrEnum):
    """Breakdowns of ``eval rg --by`` (``eval.rg.GROUP_FIELDS``)."""

    source = "source"
    model = "model"


class DemoModel(StrEnum):
    """Which model ``mixft demo`` runs: a real 135M instruct model, or a random tiny Mixtral."""

    smollm2 = "smollm2"
    tiny = "tiny"
