"""``qorgan score``: score a CSV / JSONL / Parquet file with a model bundle."""

from __future__ import annotations

import argparse

from serving.batch import SORT_KEYS, BatchConfig

# Defaults are BatchConfig's own (its class attributes), never spelled here.


def _score(args: argparse.Namespace) -> int:
    from models.bundle import BundleError
    from serving.batch import config_from_args, score_file

    config = config_from_args(**vars(args))
    try:
        summary = score_file(config)
    except BundleError as exc:
        raise ValueError(str(exc)) from None
    print(summary.format())
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``qorgan score``."""
    p = sub.add_parser(
        "score", help="score a CSV / JSONL / Parquet file (adds score_*, flag_*, priority, error columns)",
        description="Score every row of INPUT and write OUTPUT (format from each file's extension: "
                    ".csv, .jsonl/.ndjson, .parquet). All input columns are kept; rows with a missing "
                    "or empty text are kept with an error. Interrupted runs continue with --resume.")
    p.add_argument("input", type=str, help="input file (.csv, .jsonl, .ndjson, .parquet)")
    p.add_argument("-o", "--output", required=True, help="output file; written atomically")
    p.add_argument("--bundle", default=BatchConfig.bundle, help="model bundle folder (default: %(default)s)")
    p.add_argument("--policy", default=BatchConfig.policy,
                   help="threshold policy for flags and priority (default: the bundle's batch default, "
                        "triage in the default model; GET /model or bundle.json → serving)")
    p.add_argument("--text-column", default=BatchConfig.text_column,
                   help="column holding the message text (default: %(default)s)")
    p.add_argument("--sort", choices=SORT_KEYS, default=BatchConfig.sort,
                   help="order the output most urgent first (urgent, high, normal, low; stable; errors last)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of the same command")
    p.add_argument("--chunk-rows", dest="chunk_rows", type=int, default=BatchConfig.chunk_rows,
                   help="rows read, scored and checkpointed at a time (default: %(default)s)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=BatchConfig.batch_size,
                   help="messages per model call (default: %(default)s)")
    p.add_argument("--threads", dest="intra_op_threads", type=int, default=BatchConfig.intra_op_threads,
                   help="onnxruntime intra-op threads (default: all available cores)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=_score)
