"""The ``edgekit`` command: a thin shell over the Python API, one module a command.

``main()`` turns every way a command can end into an exit status and at most one line on stderr:

- an ``EdgekitError`` (a user error) prints the one line ``edgekit: error: <message>`` and exits with its
  code: 2 for a ``UsageError``, 1 for any other failure. The message is the whole story for the user; the
  exception that caused it is kept (``raise ... from exc``) and shown only with ``--debug``;
- any other exception is a bug in edgekit, not in the user's input: it always prints its traceback (a long
  compile or a daemon's crash may not be cheap to reproduce, and the report needs it), then the line
  ``edgekit: internal error: <Type>: <message> (a bug in edgekit, ...; please report it ...)``; exit 3;
- Ctrl-C prints ``edgekit: interrupted`` and exits 130; argparse's own errors exit 2.

``--debug`` (before or after the command) or ``EDGEKIT_DEBUG=1`` in the environment prints, before a user
error's line, the full traceback with its chain of causes (``traceback.print_exception``); the exit code is
the same. In every case the last line on stderr is the ``edgekit:`` line.

``--print-api`` on any command prints the Python call the command makes (``import edgekit`` and one call with
only the arguments that differ from the API's defaults) and exits 0 without running it; ``--debug`` is not
part of it.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from edgekit._version import __version__

# command -> module; each module defines add_parser(subparsers), api_call(args) -> Call (the public function of
# ``edgekit`` it calls, with the arguments: what --print-api prints) and run(args) -> int, which invokes that
# call and prints the result. OUTPUT_FLAGS in each module names the flags that only change how the result is shown.
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

INTERNAL_ERROR = 3  # exit status of a bug in edgekit (user errors are 1 and 2, Ctrl-C 130)
SIGPIPE_EXIT = 141  # stdout's reader closed the pipe: the status a shell gives a process killed by SIGPIPE
# Errors of the machine, not of edgekit or the input: one line and exit 1, with what to do.
_ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "free space on that disk or write somewhere else",
    errno.EDQUOT: "free space within your disk quota or write somewhere else",
    errno.EROFS: "that file system is read-only; write somewhere else",
    errno.EACCES: "fix its permissions or choose a path you may use",
    errno.EPERM: "fix its permissions or choose a path you may use",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
}
DEBUG_ENV = "EDGEKIT_DEBUG"
_DEBUG_HELP = f"on an error, also print the traceback with its causes (or set {DEBUG_ENV}=1)"
_PRINT_API_HELP = (
    "print the Python call (import edgekit; edgekit.COMMAND(...)) this command makes, and exit without running it"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgekit",
        description="Compile trained conv-nets for edge targets into verified bundles, and run them.",
        epilog="exit status: 0 success, 1 failure, 2 usage error, 3 internal error (a bug in edgekit), 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    for command in sub.choices.values():  # also after the command; SUPPRESS keeps a --debug given before it
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
        command.add_argument("--print-api", action="store_true", help=_PRINT_API_HELP)
    return parser


def debug_from_env() -> bool:
    """True when EDGEKIT_DEBUG is set to anything but empty, 0, false, no or off."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def main(argv: list[str] | None = None) -> int:
    from edgekit.errors import EdgekitError

    debug = debug_from_env()
    try:
        args = build_parser().parse_args(argv)
        debug = debug or args.debug
        if args.print_api:
            print(args.api(args).source(), end="")
            return 0
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a full disk under a redirected stdout shows here, not after main returns
        return code
    except BrokenPipeError:
        # The reader of stdout went away (`edgekit targets | head -1`): nothing is wrong, nothing more to say.
        _silence_stdout()
        return SIGPIPE_EXIT
    except EdgekitError as exc:
        if debug:
            _print_traceback(exc)
        print(f"edgekit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if debug:
            _print_traceback(exc)
        print("edgekit: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        hint = _ENVIRONMENT_ERRORS.get(exc.errno or 0)
        if hint is None:
            return _internal_error(exc)
        if debug:
            _print_traceback(exc)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"edgekit: error: {exc.strerror or exc}{where}; {hint}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug in edgekit: keep the traceback for the report, say so on the last line
        return _internal_error(exc)


def _internal_error(exc: BaseException) -> int:
    _print_traceback(exc)
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    print(
        f"edgekit: internal error: {what} (a bug in edgekit, not in your input; please report it with the "
        "traceback above)",
        file=sys.stderr,
    )
    return INTERNAL_ERROR


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file descriptor (an in-process caller's buffer): nothing to do
        pass


def _print_traceback(exc: BaseException) -> None:
    import traceback

    sys.stderr.flush()
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


def entry() -> None:
    sys.exit(main())
