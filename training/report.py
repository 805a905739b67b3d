"""The model card (bundle README.md), generated from the metrics."""

from __future__ import annotations

from typing import Any

from benchmarks.functional.evaluate import render as render_functional
from training.evaluate import ANY_KNOWN


def _f(x: Any, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def metrics_table(table: dict, labels: list[str], policies: list[str]) -> str:
    """Markdown table: rows label × language, columns ROC-AUC, PR-AUC, P/R/F1 per policy."""
    head = ["lang", "label", "n+", "ROC-AUC", "PR-AUC"]
    for p in policies:
        head += [f"{p} P", f"{p} R", f"{p} F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lang, block in table.items():
        for lb in labels:
            e = block["labels"][lb]
            row = [lang, lb, str(e["support"]), _f(e.get("roc_auc")), _f(e.get("pr_auc"))]
            for p in policies:
                row += [_f(e[p]["precision"], 2), _f(e[p]["recall"], 2), _f(e[p]["f1"], 2)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def macro_comparison(metrics: dict) -> str:
    """Macro PR-AUC per language for the model variants and the baseline."""
    variants = [v for v in ("torch", "onnx_int8", "onnx_fp32", "baseline") if v in metrics.get("macro_pr_auc", {})]
    langs = list(metrics["macro_pr_auc"][variants[0]])
    gaps = metrics.get("gap_vs_baseline", {})
    head = variants + (["model − baseline (bootstrap interval)"] if gaps else [])
    lines = ["| lang | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for lang in langs:
        row = [_f(metrics["macro_pr_auc"][v][lang]) for v in variants]
        if gaps:
            g = gaps.get(lang)
            row.append("–" if g is None else f"{g['gap']:+.3f}" + (
                f" [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}] ({g['confidence']:.0%})" if g["ci"] else ""))
        lines.append(f"| {lang} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def parity_text(parity: dict) -> str:
    """Markdown lines describing the fp32 gate and every int8 attempt."""
    lines = [f"- fp32: max |Δlogit| vs torch = {parity['fp32']['max_abs_logit_diff']:.2e} "
             f"(gate {parity['fp32']['atol']:.0e}): passed."]
    for a in parity["int8_attempts"]:
        agree = ", ".join(f"{k} {v:.2%}" for k, v in a["flag_agreement"].items())
        lines.append(f"- int8 `{a['recipe']}`: max |Δproba| {a['max_abs_proba_diff']:.3f} "
                     f"(mean {a['mean_abs_proba_diff']:.4f}), flags identical {agree}: "
                     f"{'passed' if a['passed'] else 'failed'}.")
    if parity.get("int8_recipe"):
        why = f" (int8 recipe `{parity['int8_recipe']}`)."
    elif parity["int8_attempts"]:
        why = " — no int8 recipe met the parity gate, so the fp32 graph is served."
    else:
        why = " — no int8 recipe was tried (`export.int8_recipes` is empty)."
    lines.append(f"- Served graph: **{parity['serving_variant']}**" + why)
    return "\n".join(lines)


def flag_rate_table(background: dict, labels: list[str]) -> str:
    """Markdown table of the share of held-out ordinary text flagged, policy × language × label."""
    head = ["policy", "lang", "n", *labels, "any of the known-negative labels"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for policy, per_lang in background["flag_rate"].items():
        for lang, rates in per_lang.items():
            n = sum(background["messages"].values()) if lang == "all" else background["messages"].get(lang, 0)
            any_known = rates[ANY_KNOWN]
            lines.append(f"| {policy} | {lang} | {n} | " + " | ".join(f"{rates[lb]:.1%}" for lb in labels)
                         + f" | {any_known:.1%} |")
    return "\n".join(lines)


def _or(labels) -> str:
    """`a`, `b` or `c`."""
    names = [f"`{lb}`" for lb in labels]
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def functional_section(functional: dict | None, policies: list[str]) -> str:
    """The model card's section on the functional suite (empty when it was not run)."""
    if not functional:
        return ""
    return f"""
## Functional suite (benchmarks/functional, version {functional['suite_version']})
Pass rate per functionality × language and policy: a case passes when every label it expects
is flagged and no label it rules out is. Floors: `must` functionalities
{functional['floors']['must_pass_rate']:.0%} in every language under their policies; identity-group
false-flag gap ≤ {functional['floors']['max_group_gap']:.0%} under {functional['floors']['gap_policy']}.

{render_functional(functional, tuple(policies))}
"""


def background_section(background: dict | None, labels: list[str]) -> str:
    """The model card's section on held-out real text (empty when there was none)."""
    if not background:
        return ""
    gate, unknown = background["gate"], background.get("unknown", [])
    verdict = ("passed" if gate["passed"] else
               "**FAILED** (bundle written because `eval.background_gate` is `warn`):\n"
               + "\n".join(f"  - {b}" for b in gate["breaches"]))
    return f"""
## Ordinary real text (held out from training)
Share of real, human-written messages flagged, from sources and domains never used in training
({', '.join(background['sources'])}). Every flag of {_or(lb for lb in labels if lb not in unknown)}
here is a false alarm; {_or(unknown)} {'is' if len(unknown) == 1 else 'are'} not known for this text (some reviews insult staff).

{flag_rate_table(background, labels)}

Gate (`eval.max_flag_rate`, mode `{gate['mode']}`): {verdict}
"""


def pinned_section(pinned: dict | None) -> str:
    """The like-for-like figures on the pinned corpus version's test messages, if any."""
    if not pinned or not pinned.get("macro_pr_auc"):
        return ""
    per_lang = ", ".join(f"{lang} {_f(v)}" for lang, v in pinned["macro_pr_auc"].items() if lang != "all")
    return (f"On the {pinned['messages']} test messages of the pinned earlier corpus version "
            f"(`{pinned['pin_file']}`; compare with that version's models here): macro PR-AUC "
            f"{_f(pinned['macro_pr_auc']['all'])} ({per_lang}).\n")


def model_card(*, name: str, version: str, base_model: str, pooling: str, labels: list[str],
               languages: list[str], calibration: dict, metrics: dict, data_summary: dict) -> str:
    """Markdown model card for the bundle."""
    policies = list(calibration["policies"])
    th_lines = ["| policy | label | objective | threshold | calib P | P at prevalence | calib R | achieved target |",
                "|---|---|---|---|---|---|---|---|"]
    for p in policies:
        for lb in labels:
            e = calibration["policies"][p][lb]
            target = f"{e['objective']} ≥ {e['target']}" if e.get("target") is not None else e["objective"]
            at_prev = e.get("precision_at_prevalence")
            th_lines.append(f"| {p} | {lb} | {target} | {e['threshold']:.3f} | {e['precision']:.2f} | "
                            f"{_f(at_prev, 2)} | {e['recall']:.2f} | {'yes' if e['achievable'] else 'no'} |")
    cal = metrics["calibration"]
    parity = metrics["parity"]
    prevalence = ", ".join(f"{lb} {e['prevalence']:.1%}" if e.get("prevalence") else f"{lb} unshifted"
                           for lb, e in calibration["labels"].items())
    return f"""# {name} {version}

Scores messages written by and to children for **{', '.join(labels)}**, in
{', '.join(languages)} (Kazakh, Russian, English, Kazakh–Russian code-switching;
Latin transliteration included). Scores are calibrated probabilities per label;
flags are `probability >= threshold` of a policy (`moderation`: precision first;
`triage`: recall first for {_or(lb for lb in labels
                                 if calibration["policies"]["triage"][lb]["objective"] == "recall")}).

## Intended use
- Moderation systems of schools, messengers and games (policy `moderation`).
- Helpline triage: work the most urgent messages first (policy `triage`,
  priority urgent > high > normal > low).
- It is a screening aid for trained people, not a decision maker. A missed
  suicidal child is the worst failure: do not use it to *clear* messages
  without human review in a helpline setting.

## Model
- Base encoder: `{base_model}`; multi-label head on {"the masked mean of the last hidden states" if pooling == "mean" else "the encoder's own [CLS] classification head"},
  fine-tuned with BCE (positive weight per label).
- Calibration: per-label temperature scaling fitted on the calib split, then shifted from
  the calib split's base rate to the deployment prevalence ({prevalence}), so that a score
  of 0.9 means 90% in traffic where that share of messages carries the label. Moderation
  precision is computed at the same prevalence when the thresholds are fitted.
- Served graph: ONNX {metrics['parity']['serving_variant']} (see "Export parity"); fp32 graph in `model.fp32.onnx`.

## Data
Written for this project (see `data/DATA_CARD.md` in the repository): {data_summary.get('records', '?')} messages
after deduplication; split train / calib / test = {' / '.join(str(n) for n in data_summary.get('splits', {}).values())}.
{data_summary.get('background', '')}

## Evaluation (test split)
Macro PR-AUC per language, fine-tuned model vs the TF-IDF baseline:

{macro_comparison(metrics)}

Per label × language, torch model with calibrated probabilities:

{metrics_table(metrics['test']['torch'], labels, policies)}

{pinned_section(metrics.get('test_pinned'))}
Calibration (test split, all labels, at its own base rate): ECE {cal['ece_before']:.3f} → {cal['ece_after']:.3f};
Brier {cal['brier_before']:.4f} → {cal['brier_after']:.4f}.
{background_section(metrics.get('background'), labels)}{functional_section(metrics.get('functional'), policies)}
## Policy thresholds (fitted on the calib split; 90% bootstrap intervals in calibration.json)
{chr(10).join(th_lines)}

## Export parity (test split)
{parity_text(parity)}

## Limits
- The corpus is small and written for this project, not sampled from real
  traffic; real messages will differ. Evaluate on your own labelled data before relying on it.
- The test split is small: per-language figures have wide uncertainty.
- Sarcasm, long conversations (context across messages), images and voice are out of scope.
- Thresholds were fitted on a few hundred calib messages; refit them on your data.
- Moderation thresholds ask for 90% precision at the deployment prevalence, measured on
  calib negatives that are mostly hard negatives written to resemble positives; where a
  label's calib recall under `moderation` is low (thresholds table), that policy flags
  little of it. Set `policy.prevalence` to your traffic's base rates and refit.
"""
