"""`renal-ldm` command line: one module per subcommand group, each a thin wrapper over the library.

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its parsers and sets `func` to a
callable taking the parsed namespace and returning an exit code. Errors a user can cause (ValueError,
FileNotFoundError) print one clear line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from renal_ldm import __version__

COMMAND_MODULES = [
    "renal_ldm.cli.caption_cmd",
    "renal_ldm.cli.train_cmd",
    "renal_ldm.cli.sample_cmd",
    "renal_ldm.cli.phantom_cmd",
    "renal_ldm.cli.tile_cmd",
    "renal_ldm.cli.segment_cmd",
    "renal_ldm.cli.evaluate_cmd",
    "renal_ldm.cli.db_cmd",
    "renal_ldm.cli.survey_cmd",
    "renal_ldm.cli.survey_demo_cmd",
    "renal_ldm.cli.users_cmd",
    "renal_ldm.cli.mix_cmd",
    "renal_ldm.cli.realism_cmd",
    "renal_ldm.cli.slide_cmd",
    "renal_ldm.cli.slides_cmd",
    "renal_ldm.cli.import_cmd",
    "renal_ldm.cli.annotations_cmd",
    "renal_ldm.cli.autoencode_cmd",
]


class UserError(Exception):
    """An error in what the user asked for; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="renal-ldm",
        description="Synthetic renal histopathology: captions, phantom tissue, latent diffusion, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"renal-ldm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, FileExistsError) as exc:
        print(f"renal-ldm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"renal-ldm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
