"""Judged rates corrected for the judge's own error, measured by ``eval tc`` on gold (``--checker-eval``).

Loads the ``eval tc`` result, checks it measured the same judge, and gives the Rogan-Gladen rate
with Lang-Reiczigel's interval, or "not identifiable" with the reason; the corrected paired
difference by MOVER-R. Method and assumption: docs/evaluation.md and
docs/design/evaluation-notes.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.eval.items import ItemFile
from mixtral_ft.eval.metrics import Estimate, rate
from mixtral_ft.eval.result import RESULTS_SCHEMA
from mixtral_ft.eval.stats import (
    DEFAULT_CONFIDENCE,
    Interval,
    independent_difference_interval,
    lang_reiczigel_interval,
    mover_ratio_interval,
    newcombe_paired_interval,
    rogan_gladen,
)
from mixtral_ft.infer.output import manifest_path_for
from mixtral_ft.util.hashing import sha256_file
from mixtral_ft.util.manifest import read_manifest

ASSUMPTION = (
    "the judge's sensitivity and specificity measured on the gold set carry over to the judged "
    "responses (same judge, same kind of responses)"
)

# The fields of a judge's identity that must agree; adapter_sha256 replaces the adapter path
# when both sides know it, prompt (the prompt style) is compared when both sides record it.
_IDENTITY_FIELDS = ("model", "adapter", "prompt_sha256")


def _judge_manifest_settings(path: Path) -> dict[str, Any]:
    """``settings`` of the manifest ``mixft judge`` writes beside its output, or {} when absent."""
    data = read_manifest(manifest_path_for(path))  # a corrupt manifest is an error, never "absent"
    if data is None:
        return {}
    settings = data.get("settings") if isinstance(data, dict) else None
    return settings if isinstance(settings, dict) else {}


def judge_identity(f: ItemFile) -> tuple[dict[str, Any] | None, str | None]:
    """(the one judge that wrote ``f``'s rows, None) or (None, why it is not known).

    From the rows' ``judge`` objects (backend, model, adapter, prompt_sha256), completed from the
    judge's manifest with the adapter's weight hash and the prompt style when it is beside the file.
    """
    if not f.judges:
        return None, f"{f.path}: no row carries a 'judge' identity (backend, model, adapter, prompt_sha256)"
    if len(f.judges) > 1:
        return None, f"{f.path}: rows come from {len(f.judges)} different judges"
    identity = {k: f.judges[0].get(k) for k in ("backend", "model", "adapter", "prompt_sha256")}
    settings = _judge_manifest_settings(f.path)
    if settings.get("adapter_sha256"):
        identity["adapter_sha256"] = settings["adapter_sha256"]
    if settings.get("prompt"):
        identity["prompt"] = settings["prompt"]
    return identity, None


def _identity_text(identity: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={identity[k]}"
        for k in ("backend", "model", "adapter", "adapter_sha256", "prompt", "prompt_sha256")
        if identity.get(k) is not None
    )


def same_judge(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The identity fields on which two judges differ (empty: the same judge)."""
    diffs = []
    for k in _IDENTITY_FIELDS:
        if k == "adapter" and a.get("adapter_sha256") and b.get("adapter_sha256"):
            if a["adapter_sha256"] != b["adapter_sha256"]:
                diffs.append("adapter_sha256")
            continue
        if a.get(k) != b.get(k):
            diffs.append(k)
    if a.get("prompt") and b.get("prompt") and a["prompt"] != b["prompt"]:
        diffs.append("prompt")
    return diffs


@dataclass(frozen=True)
class CheckerEval:
    """A judge's confusion matrix on gold, read from an ``eval tc`` result directory."""

    path: Path  # the results.json
    sha256: str
    label: str
    identity: dict[str, Any] | None
    identity_note: str | None
    count_relevance: bool
    tp: int  # gold hallucinated, flagged
    fn: int  # gold hallucinated, not flagged
    fp: int  # gold clean, flagged
    tn: int  # gold clean, not flagged
    unparsed_pos: int
    unparsed_neg: int

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CheckerEval:
        path = Path(directory)
        results = path / "results.json" if path.is_dir() else path
        if not results.is_file():
            raise UsageError(f"{path}: --checker-eval needs an `mixft eval tc --out` directory (no results.json)")
        try:
            data = json.loads(results.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError([Problem(str(results), None, None, f"invalid JSON: {e}")]) from None
        if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
            raise InputError([Problem(str(results), None, "schema", f"not a mixft eval result ({RESULTS_SCHEMA})")])
        if data.get("kind") != "tc":
            raise UsageError(f"{results}: --checker-eval needs an `eval tc` result, this is `eval {data.get('kind')}`")
        try:
            cm = data["confusion_matrix"]
            pos, neg = cm["gold_hallucinated"], cm["gold_clean"]
            cells = [
                int(pos["flagged"]),
                int(pos["not_flagged"]),
                int(neg["flagged"]),
                int(neg["not_flagged"]),
                int(pos["unparsed"]),
                int(neg["unparsed"]),
            ]
        except (KeyError, TypeError, ValueError):
            raise InputError([Problem(str(results), None, "confusion_matrix", "missing or malformed")]) from None
        if "checker" in data:
            identity, note = data["checker"], data.get("checker_note")
        else:  # written before eval tc recorded the checker apart from the gold file's judges
            judges = data.get("judges") or []
            identity = judges[0] if len(judges) == 1 else None
            note = (
                None
                if identity
                else (
                    f"{results}: records {len(judges)} judges and no 'checker'; "
                    "re-run `mixft eval tc` to record which judge made the predictions"
                )
            )
        return cls(
            results,
            sha256_file(results),
            str(data.get("label") or path.name),
            identity,
            note,
            bool((data.get("options") or {}).get("count_relevance", False)),
            *cells,
        )

    # -- the judge's error rates, over its parsed outputs
    @property
    def positives(self) -> int:
        return self.tp + self.fn

    @property
    def negatives(self) -> int:
        return self.fp + self.tn

    @property
    def unparsed(self) -> int:
        return self.unparsed_pos + self.unparsed_neg

    def sensitivity(self, method: str = "wilson", confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
        return rate(self.tp, self.positives, method, confidence, "no hallucinated gold item with a parsed verdict")

    def specificity(self, method: str = "wilson", confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
        return rate(self.tn, self.negatives, method, confidence, "no clean gold item with a parsed verdict")

    def youden(self, method: str = "wilson", confidence: float = DEFAULT_CONFIDENCE) -> tuple[Estimate, str | None]:
        """(Youden's J = Se + Sp - 1 with its interval, None) or (J, why the correction is not identifiable)."""
        if self.positives == 0 and self.negatives == 0:
            return Estimate(None, None, note="undefined"), (
                f"every one of the checker's {self.unparsed} outputs on the gold set is unparsed"
            )
        if self.positives == 0:
            return Estimate(None, None, note="undefined"), (
                "the checker eval has no hallucinated gold item with a parsed verdict, so its sensitivity is unknown"
            )
        if self.negatives == 0:
            return Estimate(None, None, note="undefined"), (
                "the checker eval has no clean gold item with a parsed verdict, so its specificity is unknown"
            )
        j = self.tp / self.positives - self.fp / self.negatives
        ci = independent_difference_interval(self.tp, self.positives, self.fp, self.negatives, method, confidence)
        est = Estimate(j, Interval(max(-1.0, ci.low), min(1.0, ci.high), ci.method, confidence))
        if self.tp == 0:
            return est, f"the checker's recall is 0/{self.positives}"
        if j <= 0:
            return est, (
                f"the checker is no better than chance: sensitivity {self.tp}/{self.positives} + "
                f"specificity {self.tn}/{self.negatives} - 1 = {j:.3f}"
            )
        if ci.low <= 0:
            return est, (
                f"sensitivity + specificity - 1 = {j:.3f} is not clearly above 0 "
                f"({round(100 * confidence)}% interval {ci.low:.3f} to {ci.high:.3f})"
            )
        return est, None

    def unidentifiable_reason(self, method: str = "wilson", confidence: float = DEFAULT_CONFIDENCE) -> str | None:
        return self.youden(method, confidence)[1]

    def to_dict(self, method: str = "wilson", confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
        """What results.json records about the judge's error (``checker_eval``)."""
        j, reason = self.youden(method, confidence)
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "label": self.label,
            "checker": self.identity,
            "count_relevance": self.count_relevance,
            "confusion_matrix_parsed": {"tp": self.tp, "fn": self.fn, "fp": self.fp, "tn": self.tn},
            "unparsed": {"gold_hallucinated": self.unparsed_pos, "gold_clean": self.unparsed_neg},
            "sensitivity": self.sensitivity(method, confidence).to_dict(),
            "specificity": self.specificity(method, confidence).to_dict(),
            "youden_j": j.to_dict(),
            "identifiable": reason is None,
            "not_identifiable_reason": reason,
            "assumption": ASSUMPTION,
        }

    def check_applies_to(self, files: list[ItemFile], count_relevance: bool) -> None:
        """Refuse to correct ``files`` with this checker eval unless the same judge wrote them all."""
        if count_relevance != self.count_relevance:
            raise UsageError(
                f"--checker-eval {self.path} was computed with count_relevance={self.count_relevance}, this "
                f"evaluation with count_relevance={count_relevance}: the judge's error must be measured on the "
                "same definition of 'hallucinated'"
            )
        if self.identity is None:
            raise UsageError(
                f"--checker-eval {self.path}: the judge that made its predictions is not known "
                f"({self.identity_note}); cannot check it is the judge of the rates to correct"
            )
        for f in files:
            identity, why = judge_identity(f)
            if identity is None:
                raise UsageError(
                    f"--checker-eval: cannot check that {f.path} was judged by the checker of {self.path}: {why}"
                )
            diffs = same_judge(identity, self.identity)
            if diffs:
                raise UsageError(
                    f"--checker-eval: {f.path} and {self.path} come from different judges (they differ in "
                    f"{', '.join(diffs)}): {f.path.name}: {_identity_text(identity)}; checker eval: "
                    f"{_identity_text(self.identity)}"
                )


def corrected_rate(
    flagged: int,
    n: int,
    checker: CheckerEval,
    method: str = "wilson",
    confidence: float = DEFAULT_CONFIDENCE,
    undefined: str = "every item is unparsed",
) -> Estimate:
    """The Rogan-Gladen rate behind ``flagged`` of ``n`` judged items with its Lang-Reiczigel interval,
    or value None with the reason (no items, or not identifiable)."""
    if n == 0:
        return Estimate(None, None, note=f"undefined: {undefined}")
    reason = checker.unidentifiable_reason(method, confidence)
    if reason is not None:
        return Estimate(None, None, note=f"not identifiable: {reason}")
    se, sp = checker.tp / checker.positives, checker.tn / checker.negatives
    value = rogan_gladen(flagged / n, se, sp)
    ci = lang_reiczigel_interval(flagged, n, checker.tp, checker.positives, checker.tn, checker.negatives, confidence)
    if value is None or ci is None:  # unreachable when J's interval excludes 0; kept as a guard
        return Estimate(None, None, note="not identifiable: sensitivity + specificity - 1 is not above 0")
    return Estimate(min(1.0, max(0.0, value)), ci)


def corrected_difference(
    n11: int,
    n10: int,
    n01: int,
    n00: int,
    checker: CheckerEval,
    method: str = "wilson",
    confidence: float = DEFAULT_CONFIDENCE,
) -> Estimate:
    """Corrected difference B - A of two paired flag rates judged by the same checker: (p_B - p_A) / J.

    ``n11``: flagged in both; ``n10``: in A only; ``n01``: in B only; ``n00``: in neither. The interval
    is MOVER-R (Newcombe 2016) from Newcombe's paired interval of p_B - p_A and the interval of J;
    the two are independent (different items), and pairing is kept in the numerator's interval.
    """
    n = n11 + n10 + n01 + n00
    if n == 0:
        return Estimate(None, None, note="undefined: no item is parsed in both files")
    j, reason = checker.youden(method, confidence)
    if reason is not None or j.value is None or j.interval is None:
        return Estimate(None, None, note=f"not identifiable: {reason}")
    diff = (n01 - n10) / n
    diff_ci = newcombe_paired_interval(n11, n01, n10, n00, confidence)  # B first: B - A
    ratio = mover_ratio_interval(diff, diff_ci, j.value, j.interval, "mover-r")
    if ratio is None:
        return Estimate(None, None, note="not identifiable: sensitivity + specificity - 1 is not above 0")
    return Estimate(
        max(-1.0, min(1.0, diff / j.value)),
        Interval(max(-1.0, ratio.low), min(1.0, ratio.high), ratio.method, confidence),
    )
