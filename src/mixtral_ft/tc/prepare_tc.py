"""``mixft prepare tc``: labeled responses → Axolotl-ready truth-checker train/test files.

Pipeline (docs/truth-checker.md):

1. read the main inputs (``[TAG=]PATH``; ``--format ragtruth`` expands RAGTruth QA lines) and
   the ``--augment`` files, tagging each row with its source;
2. check and normalize every row; turn its label (verdict object, RAGTruth spans, boolean
   ``hallucinated``, or a ``--judgements`` verdict joined by id) into one verdict;
3. split by group with the seeded, order-independent rule of ``prepare rg``; augmentation
   rows go to train only (those whose group is in test are dropped), then ``--augment-cap``;
4. fill ``corrected_response`` (input, else with ``--corrections from-clean`` a clean response
   to the same question, else null);
5. render ``prompt`` (configs/prompts/tc_v1.txt) and ``completion`` (the verdict text), write
   ``train.jsonl``, ``test.jsonl``, ``rejected.jsonl``, ``summary.json`` and ``manifest.json``
   into a staged directory that replaces ``--out`` only on success.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mixtral_ft.data.normalize import normalize_text
from mixtral_ft.data.readers import InputSpec, decode_item, iter_chunks, iter_rows, parse_input, type_name
from mixtral_ft.data.split import SplitAssigner, TestSize, parse_test_size, split_key
from mixtral_ft.data.validate import DEFAULT_PROBLEM_CAP, ProblemCollector, check_key, check_text, check_text_or_list
from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.tc.labels import label_verdict
from mixtral_ft.tc.prompt import load_template, render_tc_prompt, template_sha256
from mixtral_ft.tc.verdict import VERDICT_VERSION, Verdict, is_hallucinated, verdict_to_text

RAGTRUTH_FORMAT = "ragtruth"
INPUT_FORMATS = ("jsonl", "json", "csv", "parquet", RAGTRUTH_FORMAT)
CORRECTIONS = ("input", "from-clean")
DEFAULT_SEQUENCE_LEN = 8192
DEFAULT_AUGMENT_TAG = "augment"
MAIN, AUGMENT = "main", "augment"
# Fields the output row sets itself; every other input field is copied through.
_OWN_FIELDS = ("id", "source", "model", "group", "context", "question", "response", "verdict", "hallucinated",
               "prompt", "completion", "corrected_response")


@dataclass(frozen=True)
class PrepareTcOptions:
    """Everything ``prepare tc`` needs; the CLI builds one of these."""

    inputs: tuple[str, ...]
    out: Path
    format: str | None = None  # None: by file extension; or one of INPUT_FORMATS
    augment: tuple[str, ...] = ()
    augment_cap: int | None = None
    judgements: tuple[str, ...] = ()
    corrections: str = "input"
    group_by: str | None = None
    test_size: str = "0.1"
    seed: int = 42
    count_relevance: bool = False
    skip_invalid: bool = False
    force: bool = False
    tokenizer: str | None = None
    sequence_len: int = DEFAULT_SEQUENCE_LEN
    template: Path | None = None
    max_problems: int = DEFAULT_PROBLEM_CAP


@dataclass
class TcRow:
    """One checked response with its verdict, before the split."""

    id: str
    source: str
    model: str | None
    group: str
    question_key: str
    context: str | list[str]
    question: str
    response: str
    verdict: Verdict
    role: str  # MAIN or AUGMENT
    file: str
    line: int
    extra: dict[str, Any] = field(default_factory=dict)
    side: str | None = None  # "train" / "test" once assigned


@dataclass
class PrepareTcResult:
    out: Path
    summary: dict[str, Any]


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Source:
    spec: InputSpec
    role: str
    ragtruth: bool


def _parse_sources(opts: PrepareTcOptions) -> list[_Source]:
    if not opts.inputs:
        raise UsageError("give at least one INPUT file")
    if opts.format is not None and opts.format not in INPUT_FORMATS:
        from mixtral_ft.errors import suggest

        raise UsageError(suggest(opts.format, INPUT_FORMATS, "input format"))
    ragtruth = opts.format == RAGTRUTH_FORMAT
    fmt = "jsonl" if ragtruth else opts.format
    sources = [_Source(parse_input(a, fmt), MAIN, ragtruth) for a in opts.inputs]
    sources += [_Source(parse_input(a, fmt), AUGMENT, ragtruth) for a in opts.augment]
    return sources


def _raw_rows(src: _Source, fatal: list[Problem]):
    """Yield ``(line, obj | None, problems)`` for one input."""
    if src.ragtruth:
        from mixtral_ft.tc.ragtruth import read_ragtruth

        if not src.spec.path.is_file():
            fatal.append(Problem(src.spec.display, None, None, "file not found"))
            return
        yield from read_ragtruth(src.spec.path)
        return
    for chunk in iter_chunks(src.spec):
        fatal.extend(chunk.problems)  # file-level: --skip-invalid cannot skip them
        for line, item in chunk.items:
            raw = decode_item(src.spec.display, chunk.kind, line, item)
            yield raw.line, raw.obj, ([] if raw.obj is not None else [raw.problem])


def _load_judgements(paths: tuple[str, ...]) -> dict[str, tuple[dict, str, int]]:
    """``id → (judgement row, file, line)`` from ``mixft judge`` outputs (docs/formats.md §6)."""
    out: dict[str, tuple[dict, str, int]] = {}
    problems = ProblemCollector()
    for path in paths:
        spec = parse_input(path, "jsonl")
        for raw in iter_rows(spec):
            if raw.obj is None:
                problems.add(raw.problem)
                continue
            key, msg = check_key(raw.obj.get("id"))
            if msg:
                problems.add(Problem(spec.display, raw.line, "id", msg))
                continue
            prev = out.get(key)
            if prev is not None and prev[0].get("verdict") != raw.obj.get("verdict"):
                problems.add(Problem(spec.display, raw.line, "id",
                                     f"'{key}' was judged differently at {prev[1]}:{prev[2]}"))
                continue
            out.setdefault(key, (raw.obj, spec.display, raw.line))
    problems.raise_if_any()
    return out


# ---------------------------------------------------------------------------- checking


def _check_row(obj: dict[str, Any], src: _Source, line: int, opts: PrepareTcOptions,
               judgements: dict[str, tuple[dict, str, int]], used_judgements: set[str]) -> tuple[TcRow | None, list[Problem]]:
    display = src.spec.display
    names = obj.get("_fields", {})
    problems: list[Problem] = []

    def bad(field_name: str, message: str) -> None:
        problems.append(Problem(display, line, names.get(field_name, field_name), message))

    def text(field_name: str) -> str | None:
        if field_name not in obj or obj[field_name] is None:
            bad(field_name, "missing")
            return None
        value, msg = check_text(obj[field_name])
        if msg:
            bad(field_name, msg)
            return None
        value = normalize_text(value)
        if not value:
            bad(field_name, "empty")
            return None
        return value

    row_id, msg = check_key(obj.get("id")) if obj.get("id") is not None else (None, "missing")
    if msg:
        bad("id", msg)
    if obj.get("context") is None:
        bad("context", "missing")
        context = None
    else:
        context, msg = check_text_or_list(obj["context"])
        if msg:
            bad("context", msg)
        elif isinstance(context, str):
            context = normalize_text(context)
            if not context:
                bad("context", "empty")
        else:
            context = [normalize_text(s) for s in context]
            if not any(context):
                bad("context", "every snippet is empty")
    question = text("question")
    response = text("response")

    model = obj.get("model")
    if isinstance(model, dict):  # a generations file (§2) carries {"name", "adapter", ...}
        model = model.get("name")
    if model is not None and not isinstance(model, str):
        bad("model", f"expected a string, got {type_name(model)}")
        model = None
    # source: the TAG= of the file, else the row's own, else "augment" / the file name
    source = obj.get("source")
    if src.spec.tag is not None:
        source = src.spec.tag
    elif source is None:
        source = DEFAULT_AUGMENT_TAG if src.role == AUGMENT else src.spec.default_source
    elif not isinstance(source, str) or not source.strip():
        bad("source", f"expected a non-empty string, got {type_name(source)}")

    if opts.group_by is not None:
        if obj.get(opts.group_by) is None:
            bad(opts.group_by, "missing (the --group-by field)")
            group = None
        else:
            group, msg = check_key(obj[opts.group_by])
            if msg:
                bad(opts.group_by, msg)
    elif obj.get("group") is not None:
        group, msg = check_key(obj["group"])
        if msg:
            bad("group", msg)
    else:
        group = None  # the question, below

    qid = obj.get("question_id")
    if qid is not None:
        qid, msg = check_key(qid)
        if msg:
            bad("question_id", msg)

    label_row: dict[str, Any] | None = obj
    if not any(obj.get(f) is not None for f in ("verdict", "labels", "hallucinated")) and row_id in judgements:
        judged, jfile, jline = judgements[row_id]
        used_judgements.add(row_id)
        label_row = {"verdict": judged.get("verdict")}
        if judged.get("verdict") is None:
            bad("verdict", f"the judgement at {jfile}:{jline} has no parsed verdict "
                           f"({judged.get('parse_error') or judged.get('error') or 'parse failed'}); re-judge it or drop the row")
            label_row = None
    verdict = None
    if label_row is not None:
        try:
            verdict = label_verdict(label_row, opts.count_relevance)
        except ValueError as e:
            problem = getattr(e, "problem", None)
            if problem is None:
                raise
            bad(problem.field, problem.message)
    corrected = obj.get("corrected_response")
    if corrected is not None and not isinstance(corrected, str):
        bad("corrected_response", f"expected a string or null, got {type_name(corrected)}")

    if problems:
        return None, problems
    if corrected is not None and verdict.corrected_response is None and corrected.strip():
        verdict = replace(verdict, corrected_response=corrected)
    question_key = qid if qid is not None else question
    extra = {k: v for k, v in obj.items() if k not in _OWN_FIELDS and not k.startswith("_")}
    return TcRow(
        id=row_id, source=source, model=model,
        group=group if group is not None else qid if qid is not None else question,
        question_key=question_key, context=context, question=question, response=response,
        verdict=verdict, role=src.role, file=display, line=line, extra=extra,
    ), []


def _check_all(opts: PrepareTcOptions, sources: list[_Source]):
    judgements = _load_judgements(opts.judgements)
    used_judgements: set[str] = set()
    fatal: list[Problem] = []
    problems = ProblemCollector(opts.max_problems)
    rows: list[TcRow] = []
    rejected: list[dict[str, Any]] = []
    first_seen: dict[str, tuple[str, int]] = {}
    for src in sources:
        for line, obj, row_problems in _raw_rows(src, fatal):
            row = None
            if obj is not None:
                row, row_problems = _check_row(obj, src, line, opts, judgements, used_judgements)
            if row is not None and row.id in first_seen:
                f, ln = first_seen[row.id]
                row_problems = [Problem(src.spec.display, line, "id", f"duplicate id '{row.id}' (first at {f}:{ln})")]
                row = None
            if row is None:
                problems.extend(row_problems)
                clean_obj = None if obj is None else {k: v for k, v in obj.items() if not k.startswith("_")}
                rejected.append({"file": src.spec.display, "line": line, "problems": [str(p) for p in row_problems],
                                 "row": clean_obj})
                continue
            first_seen[row.id] = (row.file, row.line)
            rows.append(row)
    if fatal:
        raise InputError(fatal)
    if problems and not opts.skip_invalid:
        err = problems.error()
        raise InputError(err.problems + [Problem("hint", None, None, "fix the rows or pass --skip-invalid to "
                                                 "reject them into rejected.jsonl")], total=problems.total + 1,
                         cap=opts.max_problems + 1)
    unused = sorted(set(judgements) - used_judgements)
    return rows, rejected, problems.total, len(unused)


# ---------------------------------------------------------------------------- split, augment, corrections


def assign_split(rows: list[TcRow], test_size: TestSize, seed: int) -> None:
    """Groups of main rows go to train/test by ``prepare rg``'s rule; augmentation rows follow
    their group when it has main rows in train, go to train when it has none, and are dropped
    (``side`` "dropped") when it is in test: augmentation never enters the test set."""
    sizes: Counter[str] = Counter(r.group for r in rows if r.role == MAIN)
    assigner = SplitAssigner(test_size)
    side_of = {}
    # "tc:" keeps TC keys independent of prepare rg's ("g:..."): TC data drawn from RG's test
    # split would otherwise land entirely in the TC test split.
    for key, group in sorted((split_key("tc:" + g, seed), g) for g in sizes):
        side_of[group] = assigner.assign(key, sizes[group])
    for r in rows:
        side = side_of.get(r.group, "train")
        r.side = side if r.role == MAIN or side == "train" else "dropped_test_group"


def apply_augment_cap(rows: list[TcRow], cap: int | None, seed: int) -> int:
    """Keep at most ``cap`` augmentation rows (a seeded, order-independent choice); return how many were dropped."""
    if cap is None:
        return 0
    kept = sorted((r for r in rows if r.role == AUGMENT and r.side == "train"), key=lambda r: (split_key("aug\x1f" + r.id, seed), r.id))
    for r in kept[cap:]:
        r.side = "dropped_cap"
    return max(0, len(kept) - cap)


def fill_corrections(rows: list[TcRow], mode: str, count_relevance: bool) -> int:
    """With ``from-clean``, a hallucinated row without a correction takes a clean response to the
    same question (same group and question; main sources first, then by id). Returns how many."""
    if mode == "input":
        return 0
    clean: dict[tuple[str, str], list[TcRow]] = defaultdict(list)
    for r in rows:
        if r.side in ("train", "test") and not is_hallucinated(r.verdict, count_relevance):
            clean[(r.group, r.question_key)].append(r)
    filled = 0
    for r in rows:
        if r.side not in ("train", "test") or not is_hallucinated(r.verdict, count_relevance):
            continue
        if r.verdict.corrected_response is not None:
            continue
        options = sorted((c for c in clean.get((r.group, r.question_key), []) if c.response != r.response),
                         key=lambda c: (c.role != MAIN, c.id))
        if options:
            r.verdict = replace(r.verdict, corrected_response=options[0].response)
            filled += 1
    return filled


# ---------------------------------------------------------------------------- output


def output_row(r: TcRow, template: str, count_relevance: bool) -> dict[str, Any]:
    """The §4 row: the input's extra fields, then the TC fields, prompt and completion."""
    row = {
        "id": r.id, "source": r.source, "model": r.model, "group": r.group, "context": r.context,
        "question": r.question, "response": r.response, "verdict": r.verdict.to_dict(),
        "hallucinated": is_hallucinated(r.verdict, count_relevance),
        "prompt": render_tc_prompt(r.context, r.question, r.response, template=template),
        "completion": verdict_to_text(r.verdict),
    }
    row.update((k, v) for k, v in r.extra.items() if k not in row)
    return row


def _share(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def _tally(rows: list[TcRow], key, count_relevance: bool) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = key(r) or "(none)"
        t = out.setdefault(k, {"rows": 0, "train": 0, "test": 0, "hallucinated": 0, "mistakes": 0})
        t["rows"] += 1
        t[r.side] += 1
        h = is_hallucinated(r.verdict, count_relevance)
        t["hallucinated"] += h
        t["mistakes"] += len(r.verdict.groundedness.mistakes)
    for t in out.values():
        t["hallucinated_share"] = _share(t["hallucinated"], t["rows"])
    return dict(sorted(out.items()))


def summarize(rows: list[TcRow], count_relevance: bool) -> dict[str, Any]:
    kept = [r for r in rows if r.side in ("train", "test")]
    by_side = {s: [r for r in kept if r.side == s] for s in ("train", "test")}
    hallu = sum(is_hallucinated(r.verdict, count_relevance) for r in kept)
    return {
        "rows": len(kept),
        "train": len(by_side["train"]),
        "test": len(by_side["test"]),
        "hallucinated": hallu,
        "hallucinated_share": _share(hallu, len(kept)),
        "mistakes": sum(len(r.verdict.groundedness.mistakes) for r in kept),
        "relevance_mistakes": sum(r.verdict.relevance.mistake for r in kept),
        "groups": {s: len({r.group for r in by_side[s]}) for s in by_side},
        "by_source": _tally(kept, lambda r: r.source, count_relevance),
        "by_model": _tally(kept, lambda r: r.model, count_relevance),
        "by_split": {s: {"rows": len(v), "hallucinated": sum(is_hallucinated(r.verdict, count_relevance) for r in v),
                         "hallucinated_share": _share(sum(is_hallucinated(r.verdict, count_relevance) for r in v), len(v))}
                     for s, v in by_side.items()},
    }


def prepare_tc(opts: PrepareTcOptions) -> PrepareTcResult:
    """Run the whole ``prepare tc`` pipeline; raise ``MixftError`` on bad input, write nothing then."""
    from mixtral_ft.data.manifest import build_manifest, file_entry, output_entries, save
    from mixtral_ft.util.atomic import check_output_dir, staged_dir
    from mixtral_ft.util.jsonl import write_jsonl_atomic

    if opts.corrections not in CORRECTIONS:
        from mixtral_ft.errors import suggest

        raise UsageError(suggest(opts.corrections, CORRECTIONS, "--corrections mode"))
    if opts.augment_cap is not None and opts.augment_cap < 0:
        raise UsageError(f"--augment-cap {opts.augment_cap}: must be 0 or more")
    if opts.augment_cap is not None and not opts.augment:
        raise UsageError("--augment-cap needs at least one --augment FILE")
    if opts.sequence_len <= 0:
        raise UsageError(f"--sequence-len {opts.sequence_len}: must be positive")
    test_size = parse_test_size(opts.test_size)
    check_output_dir(opts.out, opts.force)
    template = load_template(opts.template)
    sources = _parse_sources(opts)

    rows, rejected, n_invalid, unused_judgements = _check_all(opts, sources)
    if not any(r.role == MAIN for r in rows):
        raise InputError([Problem(", ".join(s.spec.display for s in sources if s.role == MAIN), None, None,
                                  "no valid rows in the main inputs")])
    assign_split(rows, test_size, opts.seed)
    if not any(r.side == "train" for r in rows):
        raise UsageError(f"--test-size {opts.test_size} leaves no training rows "
                         f"({sum(r.role == MAIN for r in rows)} valid main rows)")
    dropped_test_group = sum(r.side == "dropped_test_group" for r in rows)
    dropped_cap = apply_augment_cap(rows, opts.augment_cap, opts.seed)
    filled = fill_corrections(rows, opts.corrections, opts.count_relevance)

    summary = summarize(rows, opts.count_relevance)
    summary.update({
        "invalid_rows": n_invalid,
        "augment": {"rows_read": sum(r.role == AUGMENT for r in rows), "dropped_test_group": dropped_test_group,
                    "dropped_cap": dropped_cap, "cap": opts.augment_cap},
        "corrections_from_clean": filled,
        "corrected_responses": sum(r.verdict.corrected_response is not None for r in rows if r.side in ("train", "test")),
        "judgements_unused": unused_judgements,
    })

    out_rows = {s: [output_row(r, template, opts.count_relevance) for r in rows if r.side == s]
                for s in ("train", "test")}
    summary["lengths"] = length_report(out_rows, opts.tokenizer, opts.sequence_len)

    with staged_dir(opts.out, force=opts.force) as stage:
        for s, v in out_rows.items():
            write_jsonl_atomic(stage / f"{s}.jsonl", v)
        write_jsonl_atomic(stage / "rejected.jsonl", rejected)
        (stage / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
        inputs = [file_entry(s.spec.path, role=s.role, tag=s.spec.tag,
                             format=RAGTRUTH_FORMAT if s.ragtruth else s.spec.format) for s in sources]
        inputs += [file_entry(parse_input(p, "jsonl").path, role="judgements") for p in opts.judgements]
        manifest = build_manifest(
            "prepare tc", _options_json(opts), inputs,
            output_entries(stage, {"train.jsonl": summary["train"], "test.jsonl": summary["test"],
                                   "rejected.jsonl": len(rejected), "summary.json": None}),
            {"train": summary["train"], "test": summary["test"], "rejected": len(rejected),
             "hallucinated": summary["hallucinated"], "mistakes": summary["mistakes"]},
            seed=opts.seed,
            verdict_version=VERDICT_VERSION,
            prompt_template=str(opts.template) if opts.template else "configs/prompts/tc_v1.txt",
            prompt_sha256=template_sha256(template),
        )
        save(stage, manifest)
    return PrepareTcResult(Path(opts.out), summary)


def length_report(rows_by_side: dict[str, list[dict[str, Any]]], tokenizer: str | None,
                  sequence_len: int) -> dict[str, Any]:
    """Token lengths of prompt + completion + EOS as Axolotl's user-defined type builds them
    (``data.lengths``); without ``tokenizer`` a 4-characters-per-token estimate."""
    from mixtral_ft.data.lengths import AXOLOTL_LONG_ROWS, AxolotlInstructionTokenizer, LengthStats, char_estimate

    tok = AxolotlInstructionTokenizer(tokenizer, sequence_len) if tokenizer else None
    report: dict[str, Any] = {"method": "tokenizer" if tok else "estimate (4 characters per token)",
                              "tokenizer": str(tokenizer) if tokenizer else None, "sequence_len": sequence_len}
    over: list[str] = []
    for side, rows in rows_by_side.items():
        stats = LengthStats()
        for i in range(0, len(rows), 256):
            batch = rows[i:i + 256]
            pairs = [(r["prompt"], r["completion"]) for r in batch]
            lengths = tok.lengths(pairs) if tok else [char_estimate(p, c) for p, c in pairs]
            for r, n in zip(batch, lengths):
                stats.add(n)
                if n > sequence_len:
                    over.append(r["id"])
        report[side] = stats.summary(sequence_len)
    report["over_sequence_len_ids"] = over[:20]
    if over:
        report["note"] = f"{len(over)} row(s) longer than {sequence_len} tokens: {AXOLOTL_LONG_ROWS}"
    return report


def _options_json(opts: PrepareTcOptions) -> dict[str, Any]:
    out = {}
    for k, v in opts.__dict__.items():
        out[k] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """The table ``prepare tc`` prints: counts and hallucinated share per source and per model."""
    from mixtral_ft.util.fmt import pct

    lines = [
        f"rows {summary['rows']} (train {summary['train']}, test {summary['test']}; "
        f"groups train {summary['groups']['train']}, test {summary['groups']['test']})",
        f"hallucinated {summary['hallucinated']} ({pct(summary['hallucinated_share'])}), "
        f"groundedness mistakes {summary['mistakes']}, relevance mistakes {summary['relevance_mistakes']}",
    ]
    for title, table in (("source", summary["by_source"]), ("model", summary["by_model"])):
        width = max([len(title)] + [len(k) for k in table])
        lines.append("")
        lines.append(f"{title:<{width}}  {'rows':>6} {'train':>6} {'test':>6} {'halluc.':>8} {'share':>7}")
        for name, t in table.items():
            lines.append(f"{name:<{width}}  {t['rows']:>6} {t['train']:>6} {t['test']:>6} {t['hallucinated']:>8} "
                         f"{pct(t['hallucinated_share']):>7}")
    aug = summary["augment"]
    if aug["rows_read"]:
        lines.append("")
        lines.append(f"augment: {aug['rows_read']} read, {aug['dropped_test_group']} dropped (group in test), "
                     f"{aug['dropped_cap']} dropped (cap {aug['cap']})")
    extra = []
    if not summary["test"]:
        extra.append("warning: the test split is empty (few groups for --test-size); use a larger fraction or a count")
    if summary["invalid_rows"]:
        extra.append(f"rejected {summary['invalid_rows']} invalid row(s) (rejected.jsonl)")
    if summary["corrections_from_clean"]:
        extra.append(f"corrected_response from a clean response: {summary['corrections_from_clean']}")
    if summary["judgements_unused"]:
        extra.append(f"judgements not matching any row: {summary['judgements_unused']}")
    lengths = summary["lengths"]
    tr = lengths["train"]
    extra.append(f"tokens ({lengths['method']}): train p50 {tr['p50']}, p99 {tr['p99']}, max {tr['p100']}; "
                 f"over {lengths['sequence_len']}: {tr['over_sequence_len'] + lengths['test']['over_sequence_len']}")
    if lengths.get("note"):
        extra.append(lengths["note"])
    return "\n".join(lines + [""] + extra)
