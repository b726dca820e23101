"""The ``edgekit`` command: a thin shell over the Python API, one module a command.

``main()`` prints an EdgekitError as one line (no traceback) and exits with its code: 2 for a usage
error, 1 for a failure. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from edgekit._version import __version__

# command -> module; each module defines add_parser(subparsers) and run(args) -> int.
COMMANDS = {
    "targets": "edgekit.cli.targets",
    "compile": "edgekit.cli.compile",
    "inspect": "edgekit.cli.inspect",
    "predict": "edgekit.cli.predict",
    "build-engine": "edgekit.cli.build_engine",
    "serve": "edgekit.cli.serve",
    "report": "edgekit.cli.report",
    "bench": "edgekit.cli.bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgekit",
        description="Compile trained conv-nets for edge targets into verified bundles, and run them.",
    )
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from edgekit.errors import EdgekitError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except EdgekitError as exc:
        print(f"edgekit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgekit: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
