"""How often bundles flag ordinary real text that nobody on the project wrote, side by side.

    python -m benchmarks.real_text --bundle models/A --bundle models/B [--data runs/B/data]
        [--chatterbot chatterbot_corpus-*.whl] [--kazsandra DIR] [--alla-g DIR]
        [--out benchmarks/results/real_text.json] [--limit N] [--drop-seen]

Sets (a set whose path is not given is skipped):

* ``background``: ``<data>/background_eval.jsonl``, the held-out background of a
  prepared data folder (``qorgan train`` writes one into ``runs/<name>/data/``).
* Reserved independent evaluation sets, never used for training; none is committed:
  ``chatterbot_en`` / ``chatterbot_ru``: every ``str`` line of the ``conversations``
  of ``chatterbot_corpus/data/{english,russian}/*.yml`` in the chatterbot-corpus wheel
  (read as a zip, not installed); ``kazsandra_eval``: column ``text`` of
  ``04_pc_valid.zip`` and ``05_pc_test.zip`` of IS2AI/KazSAnDRA (app, market, map and
  book reviews, kk); ``alla_g_nontoxic``: column ``comments`` of the rows with
  ``toxicity`` = 0 in ``toxicity_corpus/russian_distorted_toxicity.tsv`` of
  alla-g/toxicity-detection-thesis (VK comments, ru).

Each set is stripped, emptied texts dropped and exact duplicates removed. Every flag
of ``threat``, ``self_harm`` or ``bullying_disclosure`` on such text is a false alarm
(``any_of_3``); ``bullying`` is reported too, though a review or comment may insult.
With ``--data``, ``seen_in_training`` counts the texts of a set whose normalised form is
in that folder's train / calib / background_train splits; ``--drop-seen`` drops them.
Only counts and rates are printed or written, never message text.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from benchmarks.report import table
from data.background import BackgroundConfig
from data.background.importers import dedup_key, read_table
from data.schema import LABELS, PRIORITY_RULES
from data.split import MANIFEST_FILE, SPLIT_FILES, read_split
from serving.scorer import Scorer
from training.evaluate import ANY_KNOWN, flag_rates, label_table

RESULTS = Path(__file__).parent / "results" / "real_text.json"
#: Labels not known for ordinary text (the background config's): flags of every other label
#: are false alarms, counted together as ``any_of_3``.
UNKNOWN_ON_ORDINARY_TEXT = BackgroundConfig().unknown
#: The labels of the most urgent triage level (self_harm): their recall is printed.
URGENT_LABELS = PRIORITY_RULES[0][1]
ALLA_G_FILE = "russian_distorted_toxicity.tsv"
KAZSANDRA_FILES = ("04_pc_valid.zip", "05_pc_test.zip")
#: Printed columns: (policy, label or "any_of_3"): under moderation the false alarms and
#: the labels not known for ordinary text, under triage the false alarms and each label of them.
COLUMNS = (("moderation", "any_of_3"), *(("moderation", lb) for lb in UNKNOWN_ON_ORDINARY_TEXT),
           ("triage", "any_of_3"), *(("triage", lb) for lb in LABELS if lb not in UNKNOWN_ON_ORDINARY_TEXT))

Texts = list[tuple[str, str]]  # (lang, text)


def log(msg: str) -> None:
    """A progress line on stderr (counts only)."""
    print(f"[real_text] {msg}", file=sys.stderr, flush=True)


def read_background(data_dir: Path) -> Texts:
    """The held-out background split of a prepared data folder."""
    return [(r.lang, r.text) for r in read_split(data_dir, "background_eval")]


def read_chatterbot(wheel: Path) -> dict[str, Texts]:
    """``chatterbot_en`` and ``chatterbot_ru``: each conversation line of the wheel's YAML files."""
    out: dict[str, Texts] = {"chatterbot_en": [], "chatterbot_ru": []}
    with zipfile.ZipFile(wheel) as archive:
        for member in sorted(archive.namelist()):
            for folder, lang in (("english", "en"), ("russian", "ru")):
                if member.startswith(f"chatterbot_corpus/data/{folder}/") and member.endswith(".yml"):
                    doc = yaml.safe_load(archive.read(member)) or {}
                    for conv in doc.get("conversations") or []:
                        lines = conv if isinstance(conv, list) else [conv]
                        out[f"chatterbot_{lang}"] += [(lang, x) for x in lines if isinstance(x, str)]
    return out


def read_kazsandra(folder: Path) -> Texts:
    """Column ``text`` of KazSAnDRA's polarity valid and test splits (zipped CSV), lang kk."""
    return [("kk", row["text"] or "") for name in KAZSANDRA_FILES for _, row in read_table(folder / name)]


def read_alla_g(folder: Path) -> Texts:
    """The non-toxic (``toxicity`` = 0) ``comments`` of alla-g's corpus; ``folder`` is a checkout
    of the repository or a folder holding the TSV itself."""
    path = folder / "toxicity_corpus" / ALLA_G_FILE
    rows = read_table(path if path.exists() else folder / ALLA_G_FILE)
    return [("ru", row["comments"] or "") for _, row in rows if row["toxicity"] == "0"]


def clean(texts: Texts, limit: int | None = None, seed: int = 0) -> Texts:
    """Stripped, non-empty, first of each exact text; a seeded sample of ``limit`` if smaller."""
    seen: dict[str, str] = {}
    for lang, text in texts:
        text = text.strip()
        if text and text not in seen:
            seen[text] = lang
    out = [(lang, text) for text, lang in seen.items()]
    return random.Random(seed).sample(out, limit) if limit is not None and limit < len(out) else out


def training_keys(data_dir: Path) -> set[str]:
    """Normalised texts of a prepared folder's training-side splits (train, calib, background_train)."""
    return {dedup_key(r.text) for split in ("train", "calib", "background_train")
            if (data_dir / SPLIT_FILES[split]).exists() for r in read_split(data_dir, split)}


def load_sets(args: argparse.Namespace) -> dict[str, Texts]:
    """Every set whose path was given, raw."""
    sets: dict[str, Texts] = {}
    if args.data:
        sets["background"] = read_background(args.data)
    if args.chatterbot:
        sets.update(read_chatterbot(args.chatterbot))
    if args.kazsandra:
        sets["kazsandra_eval"] = read_kazsandra(args.kazsandra)
    if args.alla_g:
        sets["alla_g_nontoxic"] = read_alla_g(args.alla_g)
    return sets


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    """Score every set with every bundle; returns (and writes) the results."""
    from benchmarks.run import environment

    raw = load_sets(args)
    sets = {name: clean(texts, args.limit) for name, texts in raw.items()}
    if not sets:
        raise SystemExit("no set given: pass --data, --chatterbot, --kazsandra and/or --alla-g")
    seen = training_keys(args.data) if args.data else set()
    meta: dict = {}
    for name, texts in sets.items():
        overlap = [dedup_key(t) in seen for _, t in texts]
        meta[name] = {"raw_n": len(raw[name]), "seen_in_training": sum(overlap) if args.data else None}
        if args.drop_seen and name != "background":
            sets[name] = [x for x, hit in zip(texts, overlap, strict=True) if not hit]
        meta[name]["n"] = len(sets[name])
        meta[name]["langs"] = dict(sorted(Counter(lang for lang, _ in sets[name]).items()))
        log(f"{name}: {meta[name]['n']} messages ({meta[name]['seen_in_training']} seen in training)")
    env = environment(args.bundle[0], argv)
    env.pop("bundle")
    env["command"] = "python -m benchmarks.real_text " + " ".join(argv)
    results: dict = {"environment": env, "bundles": {}, "sets": {n: {**m, "bundles": {}} for n, m in meta.items()}}
    for path in args.bundle:
        scorer = Scorer.from_bundle(path)
        labels = list(scorer.labels)
        thresholds = {p: scorer.bundle.thresholds(p) for p in scorer.policies}
        pr_auc = scorer.bundle.metrics_summary()["macro_pr_auc"] or {}
        results["bundles"][path] = {"name": scorer.name, "version": scorer.version, "test_macro_pr_auc": pr_auc}
        unknown = [lb for lb in labels if lb in UNKNOWN_ON_ORDINARY_TEXT]
        if args.data:
            results["bundles"][path]["test_split"] = test_quality(scorer, args.data, thresholds,
                                                                  trained_ids(args.unseen_by))
        for name, texts in sets.items():
            if not texts:
                continue
            proba = scorer.proba([t for _, t in texts])
            rates = flag_rates(proba, [lang for lang, _ in texts], labels, thresholds, unknown)
            results["sets"][name]["bundles"][path] = {
                policy: {"n": len(texts), **{("any_of_3" if k == ANY_KNOWN else k): v for k, v in per["all"].items()},
                         "by_lang": {lg: r[ANY_KNOWN] for lg, r in per.items() if lg != "all"}}
                for policy, per in rates.items()}
            log(f"{name} × {path}: scored")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return results


def trained_ids(data_dirs: list[Path]) -> set[str]:
    """Ids of the train and calib splits of other runs' prepared data folders (``--unseen-by``)."""
    ids: set[str] = set()
    for d in data_dirs:
        manifest = json.loads((d / MANIFEST_FILE).read_text(encoding="utf-8"))
        ids |= set(manifest["ids"]["train"]) | set(manifest["ids"]["calib"])
    return ids


def test_quality(scorer: Scorer, data_dir: Path, thresholds: dict, exclude: set[str] = frozenset()) -> dict:
    """Macro PR-AUC per language and triage recall per label of a bundle on ``data_dir``'s
    test split: every bundle judged on the same messages. A bundle trained on another
    split of an overlapping corpus may have seen some of them: ``exclude`` (the ids other
    runs trained or calibrated on, ``--unseen-by``) leaves those out."""
    test = [r for r in read_split(data_dir, "test") if r.id not in exclude]
    y = np.array([r.label_vector() for r in test])
    table_ = label_table(scorer.proba([r.text for r in test]), y, [r.lang for r in test],
                         list(scorer.labels), thresholds)
    return {"messages": len(test),
            "macro_pr_auc": {lang: block["macro_pr_auc"] for lang, block in table_.items()},
            "triage_recall": {lang: {lb: e["triage"]["recall"] for lb, e in block["labels"].items()}
                              for lang, block in table_.items()},
            "moderation_recall": {lb: e["moderation"]["recall"] for lb, e in table_["all"]["labels"].items()},
            "moderation_precision": {lb: e["moderation"]["precision"] for lb, e in table_["all"]["labels"].items()}}


def render(results: dict) -> str:
    """The markdown table (set × bundle rows) and each bundle's test macro PR-AUC."""
    rows = []
    for name, s in results["sets"].items():
        for path, per in s["bundles"].items():
            rows.append([name, path, f"{s['n']:,}"]
                        + [f"{100 * per[p][lb]:.2f}%" if p in per else "–" for p, lb in COLUMNS])
    header = ["set", "bundle", "n"] + [f"{p} {'any of 3' if lb == 'any_of_3' else lb}" for p, lb in COLUMNS]
    lines = [table(header, rows), "", "Test macro PR-AUC (metrics.json, served variant):"]
    for path, b in results["bundles"].items():
        auc = b["test_macro_pr_auc"]
        per_lang = ", ".join(f"{lg} {v:.3f}" for lg, v in auc.items() if lg != "all" and v is not None)
        total = f"{auc['all']:.3f}" if auc.get("all") is not None else "–"
        lines.append(f"- {b['name']} {b['version']} ({path}): {total}" + (f" ({per_lang})" if per_lang else ""))
    tested = {path: b["test_split"] for path, b in results["bundles"].items() if "test_split" in b}
    if tested:
        n = next(iter(tested.values()))["messages"]
        lines += ["", f"On the test split of --data ({n} messages, the same for every bundle):"]
        for path, q in tested.items():
            auc = ", ".join(f"{lg} {v:.3f}" for lg, v in q["macro_pr_auc"].items() if v is not None)
            recall = "; ".join(f"triage {lb} recall " + ", ".join(f"{lg} {r[lb]:.2f}" for lg, r in
                                                                q["triage_recall"].items())
                               for lb in URGENT_LABELS)
            lines.append(f"- {path}: macro PR-AUC {auc}; {recall}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.real_text", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", action="append", required=True, help="a bundle folder (repeat for several)")
    p.add_argument("--data", type=Path, help="a prepared data folder with background_eval.jsonl")
    p.add_argument("--chatterbot", type=Path, help="the chatterbot-corpus wheel (.whl)")
    p.add_argument("--kazsandra", type=Path, help="a folder with KazSAnDRA's " + " and ".join(KAZSANDRA_FILES))
    p.add_argument("--alla-g", type=Path, help=f"a checkout of alla-g/toxicity-detection-thesis (or a folder with {ALLA_G_FILE})")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--limit", type=int, help="score a seeded sample of at most N messages per set")
    p.add_argument("--drop-seen", action="store_true", help="drop reserved-set texts found in --data's training splits")
    p.add_argument("--unseen-by", type=Path, action="append", default=[],
                   help="another run's prepared data folder: judge test quality only on --data's test "
                        "messages that run neither trained nor calibrated on (repeatable)")
    args = p.parse_args(argv)
    if len(set(args.bundle)) != len(args.bundle):
        p.error("a bundle is given twice")
    print(render(run(args, argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
