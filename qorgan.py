"""The ``qorgan`` command. It only collects the subcommands that each package
defines in its ``cli`` module; the work happens in the packages.

A scoring host installs only the ``serve`` extra, so a package whose
dependencies are missing simply contributes no subcommands.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Packages that contribute subcommands, in help order.
COMMAND_PACKAGES = ("data", "training", "serving")
#: Every package of this project: a broken import inside one of them is a bug, not a missing extra.
OWN_PACKAGES = (*COMMAND_PACKAGES, "models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qorgan",
        description="Score children's messages for bullying, threats, self-harm risk and "
        "bullying disclosures (kk / ru / en).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for package in COMMAND_PACKAGES:
        try:
            module = importlib.import_module(f"{package}.cli")
        except ImportError as exc:
            # Skip a package that has no CLI, or whose third-party dependencies are
            # not installed (a scoring host without the train extra); a broken
            # import inside our own code is a bug and is raised.
            missing = exc.name or ""
            if missing.split(".")[0] in OWN_PACKAGES and missing not in (package, f"{package}.cli"):
                raise
            continue
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qorgan`` console command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"qorgan {args.command}: error: {exc}", file=sys.stderr)
        return 2



if __name__ == "__main__":  # `python -m qorgan …`, e.g. from a subprocess with this interpreter
    raise SystemExit(main())
