"""``python -m benchmarks.functional --bundle DIR``: run the functional suite through the
production ``Scorer``, print the pass-rate table, write JSON, and exit 1 when a floor
is missed (a ``must`` functionality under 90% in a language, or an identity-group gap)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.functional.evaluate import Floors, evaluate_suite, render
from benchmarks.functional.suite import TEMPLATES, load_suite
from models.bundle import DEFAULT_BUNDLE_DIR

RESULTS = Path(__file__).resolve().parents[1] / "results" / "functional.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.functional", description=__doc__)
    p.add_argument("--bundle", default=DEFAULT_BUNDLE_DIR, help="model bundle (default: %(default)s)")
    p.add_argument("--templates", type=Path, default=TEMPLATES, help="suite folder (default: the committed suite)")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    p.add_argument("--must-pass-rate", type=float, default=Floors.must_pass_rate)
    p.add_argument("--max-group-gap", type=float, default=Floors.max_group_gap)
    args = p.parse_args(argv)

    from serving.scorer import Scorer

    started = time.monotonic()
    suite = load_suite(args.templates)
    scorer = Scorer.from_bundle(args.bundle)
    proba = scorer.proba([c.text for f in suite for c in f.cases])
    result = evaluate_suite(suite, proba, scorer.labels, scorer.thresholds,
                            Floors(must_pass_rate=args.must_pass_rate, max_group_gap=args.max_group_gap))
    result["bundle"] = {"path": str(args.bundle), "name": scorer.name, "version": scorer.version}
    result["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(render(result, scorer.policies))
    print(f"({result['seconds']} s; {args.out})", file=sys.stderr)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
