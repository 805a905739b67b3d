"""``qorgan data …`` subcommands: validate, stats, prepare, import-background."""

from __future__ import annotations

import argparse
import json
import sys

from data.adapters import ADAPTERS
from data.background import BACKGROUND_DIR
from data.prepare import PrepareConfig, SourceConfig, prepare_dataset
from data.split import SplitConfig

# Defaults are the config dataclasses' own (their class attributes), never spelled here.


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a JSONL/CSV/Parquet file, a folder of them, a saved HF dataset, or hf:NAME")
    p.add_argument("--adapter", default=SourceConfig.adapter, choices=sorted(ADAPTERS),
                   help="column layout of the source (default: %(default)s)")
    p.add_argument("--label-map", default=SourceConfig.label_map,
                   help="SOURCE=LABEL pairs, comma-separated, for 0/1 columns or list values "
                        "(e.g. insult=bullying,threat=threat,obscene=)")
    p.add_argument("--text-column", default=SourceConfig.text_column, help="column holding the message text")
    p.add_argument("--lang", dest="default_lang", default=SourceConfig.default_lang,
                   help="language for rows without one")


def _source(args: argparse.Namespace) -> SourceConfig:
    return SourceConfig(path=args.path, adapter=args.adapter, label_map=args.label_map,
                        text_column=args.text_column, default_lang=args.default_lang)


def _validate(args: argparse.Namespace) -> int:
    from data.validate import validate_path

    report = validate_path(args.path, _source(args).column_map())
    for issue in report.issues[: args.max_errors]:
        print(issue)
    hidden = len(report.issues) - args.max_errors
    if hidden > 0:
        print(f"… and {hidden} more")
    status = "OK" if report.ok else "FAILED"
    print(f"{status}: {report.rows} rows read, {len(report.records)} valid, {len(report.issues)} errors")
    return 0 if report.ok else 1


def _stats(args: argparse.Namespace) -> int:
    from data.dedup import normalize_records
    from data.stats import compute_stats, format_stats
    from data.validate import load_records

    stats = compute_stats(normalize_records(load_records(args.path, _source(args).column_map())))
    print(json.dumps(stats, ensure_ascii=False, indent=1) if args.json else format_stats(stats))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    config = PrepareConfig(source=_source(args), split=SplitConfig(
        train=args.train, calib=args.calib, test=args.test, seed=args.seed, pinned=args.pinned))
    out = prepare_dataset(config, args.output)
    manifest = json.loads((out / "split_manifest.json").read_text(encoding="utf-8"))
    counts = {s: c["records"] for s, c in manifest["counts"].items()}
    print(f"wrote {out}: {counts}; dropped {len(manifest['dedup']['dropped_ids'])} exact duplicates",
          file=sys.stderr)
    return 0


def _import_background(args: argparse.Namespace) -> int:
    from data.background.importers import SOURCES, import_source

    if args.list:
        for spec in SOURCES.values():
            print(f"{spec.name}\t{spec.lang}\t{spec.licence}\t{spec.repo}\t{spec.description}")
        return 0
    if not args.name:
        raise ValueError("give a source NAME (see --list)")
    if args.name not in SOURCES:
        raise ValueError(f"unknown background source {args.name!r}; known: {sorted(SOURCES)}")
    spec = SOURCES[args.name]
    if args.files:
        for raw in spec.files:
            print(f"{raw.commit or spec.commit} {raw.path}")
        return 0
    if not args.raw_dir:
        raise ValueError("give RAW_DIR: a checkout of the source repository, or a folder "
                         "holding its files under their repository paths")
    import pyarrow.parquet as pq

    out = import_source(args.name, args.raw_dir, args.output)
    domains = pq.read_table(out, columns=["domain"]).column("domain").value_counts().to_pylist()
    counts = {d["values"]: d["counts"] for d in domains}
    print(f"wrote {out}: {sum(counts.values())} rows; per domain {counts}", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``qorgan data``."""
    data = sub.add_parser("data", help="validate, describe and split labelled data")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    p = dsub.add_parser("validate", help="check labelled data; exits 1 when there are errors")
    _add_source_args(p)
    p.add_argument("--max-errors", type=int, default=50, help="errors to print (default 50)")
    p.set_defaults(func=_validate)

    p = dsub.add_parser("stats", help="counts per language × label, lengths, duplicate rate")
    _add_source_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_stats)

    p = dsub.add_parser("prepare", help="validate, normalise, deduplicate and split into train/calib/test")
    _add_source_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    for split in ("train", "calib", "test"):
        p.add_argument(f"--{split}", type=float, default=getattr(SplitConfig, split),
                       help=f"share of the {split} split (default: %(default)s)")
    p.add_argument("--seed", type=int, default=SplitConfig.seed, help="split seed (default: %(default)s)")
    p.add_argument("--pinned", default=SplitConfig.pinned,
                   help="pin file whose groups keep their split (e.g. data/split_pins.json)")
    p.set_defaults(func=_prepare)

    p = dsub.add_parser("import-background",
                        help="turn a pinned public source of real text into <output>/<name>.parquet")
    p.add_argument("name", nargs="?", metavar="NAME", help="source name (see --list)")
    p.add_argument("raw_dir", nargs="?", metavar="RAW_DIR",
                   help="checkout of the source repository, or a folder with its files under "
                        "their repository paths (each file's sha256 is checked)")
    p.add_argument("-o", "--output", default=BACKGROUND_DIR, help="output folder (default: %(default)s)")
    p.add_argument("--list", action="store_true", help="list the sources with their licences")
    p.add_argument("--files", action="store_true",
                   help="print 'COMMIT PATH' for each raw file of NAME (to export them from a checkout)")
    p.set_defaults(func=_import_background)
