"""The command line, ``mlx-deconv`` or ``python -m mlx_deconv``: one module per command, above the library.

Commands: :mod:`.info`, :mod:`.demo`, :mod:`.check`, :mod:`.bench`, :mod:`.tune`, :mod:`.vocode`. Nothing below this
folder imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from . import bench, check, demo, info, tune, vocode
from .usage import UsageError

DESCRIPTION = ("1-D transposed convolution for MLX: device info (info), a checked upsampling stack (demo), "
               "every backend against a float64 reference (check), the benchmark (bench), measured "
               "choices for backend='auto' on this machine (tune), and a vocoder checkpoint's mel spectrogram "
               "to a WAV (vocode).")


def program_name(argv0: Optional[str] = None) -> str:
    """How the user invoked us: ``mlx-deconv`` for the script, ``python -m mlx_deconv`` for the module."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    name = os.path.basename(argv0)
    if not name or name in ("__main__.py", "-c", "-m"):
        return "python -m mlx_deconv"
    return name


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: one subcommand per job, each with its ``run(args) -> exit status``."""
    parser = argparse.ArgumentParser(prog=program_name(), description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, devices, backends per stream").set_defaults(run=info.run)
    sub.add_parser("demo", help="a small upsampling stack, checked against the float64 reference").set_defaults(
        run=demo.run)
    sub.add_parser("check", help="every backend on every stream against the float64 reference").set_defaults(
        run=check.run)
    bench.add_parser(sub)
    tune.add_parser(sub)
    vocode.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """Runs one command and exits with its status.

    Args:
        argv: the arguments after the program name; default ``sys.argv[1:]``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.run(args)
    except UsageError as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        sys.exit(2)
    if status:
        sys.exit(status)
