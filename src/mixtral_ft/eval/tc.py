"""`eval tc`: a truth-checker's predictions against gold labels, matched by id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixtral_ft.eval.correction import judge_identity
from mixtral_ft.eval.items import ItemFile, match_ids
from mixtral_ft.eval.metrics import CLASSIFICATION_METRICS, classification_metrics, confusion_matrix
from mixtral_ft.eval.render import ci_level, est_text, intervals_sentence, markdown_table
from mixtral_ft.eval.result import EvalResult
from mixtral_ft.eval.stats import DEFAULT_CONFIDENCE


def default_label(pred: ItemFile) -> str:
    models = {str(j.get("model")) for j in pred.judges if j.get("model")}
    return models.pop() if len(models) == 1 else Path(pred.path).stem


def evaluate_tc(
    pred: ItemFile,
    gold: ItemFile,
    count_relevance: bool = False,
    method: str = "wilson",
    confidence: float = DEFAULT_CONFIDENCE,
    label: str | None = None,
) -> EvalResult:
    """Accuracy, precision/recall/F1 for 'hallucinated', balanced accuracy, confusion matrix.

    Records which judge made the predictions (``checker``: backend, model, adapter, prompt hash,
    and from the judge's manifest the adapter's weight hash and prompt style) so that
    ``eval rg --checker-eval`` can refuse to correct rates judged by another judge."""

    ids = match_ids(gold, pred, "gold", "predictions")
    g, p = gold.by_id(), pred.by_id()
    cm = confusion_matrix([g[i].hallucinated for i in ids], [p[i].hallucinated for i in ids])
    metrics = classification_metrics(cm, method=method, confidence=confidence)
    body: dict[str, Any] = {
        "counts": {
            "items": cm.n,
            "gold_hallucinated": cm.positives,
            "gold_clean": cm.negatives,
            "flagged": cm.tp + cm.fp,
            "unparsed": cm.unparsed,
        },
        "confusion_matrix": cm.to_dict(),
        "metrics": {k: v.to_dict() for k, v in metrics.items()},
        "definitions": {k: CLASSIFICATION_METRICS[k].description for k in metrics},
    }
    identity, why = judge_identity(pred)
    body["checker"] = identity
    if why:
        body["checker_note"] = why
    m = body["metrics"]
    summary = [("items", str(cm.n))] + [
        (k.replace("_", " "), est_text(m[k]))
        for k in ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "parse_failure_rate")
    ]
    md = "\n".join(
        [
            "Positive class: hallucinated. Unparsed predictions count as wrong for accuracy, recall and "
            "specificity (they are a third column of the confusion matrix) and are not flags for precision. "
            + intervals_sentence(m.items()),
            "",
            markdown_table(
                ["metric", f"value [{ci_level(confidence)} CI] (k/n)", "definition"],
                [[k, est_text(m[k]), body["definitions"][k]] for k in m],
            ),
            "",
            "## Confusion matrix",
            "",
            markdown_table(
                ["gold \\ prediction", "flagged", "not flagged", "unparsed"],
                [
                    ["hallucinated", cm.tp, cm.fn, cm.unparsed_pos],
                    ["clean", cm.fp, cm.tn, cm.unparsed_neg],
                ],
            ),
        ]
    )
    options = {"count_relevance": count_relevance, "interval": method, "confidence": confidence}
    return EvalResult(
        "tc", label or default_label(pred), {"predictions": pred, "gold": gold}, options, body, summary, md
    )
