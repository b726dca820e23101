"""Argument types shared by commands: each turns a flag's text into a value or a clear usage error."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def float_triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"'{text}' needs one value or three (one per colour channel)")
    return values  # type: ignore[return-value]


def size(text: str) -> int | tuple[int, int]:
    values = int_list(text)
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values
    raise argparse.ArgumentTypeError(f"'{text}' is not a size: give N (shorter side) or H,W")


def hw(text: str) -> tuple[int, int]:
    values = int_list(text)
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) == 2:
        return values  # type: ignore[return-value]
    raise argparse.ArgumentTypeError(f"'{text}' is not a crop size: give N or H,W")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be at least 1")
    return value


TRUST_MODEL_CODE_HELP = (
    "load a TorchScript file, or a .pt2 that carries pickled data or other code its loader runs (refused "
    "by default: loading it can run anything); only for files from someone you trust"
)


def add_trust_model_code(parser: argparse.ArgumentParser) -> None:
    """The --trust-model-code flag of the commands that load a model file (compile, report)."""
    parser.add_argument("--trust-model-code", action="store_true", help=TRUST_MODEL_CODE_HELP)


def scale(text: str) -> float:
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number (e.g. 0.00392 or 1/255)") from None


def choice(*choices: str) -> Callable[[str], str]:
    """A ``type=`` for a choice flag that accepts any case and gives the canonical spelling ('bgr' -> 'BGR').

    Pass the same tuple as ``choices=``: the help still lists them, and a value that is none of them gets
    argparse's own "invalid choice" error naming the choices.
    """
    canonical = {c.lower(): c for c in choices}

    def parse(text: str) -> str:
        return canonical.get(text.strip().lower(), text)

    parse.__name__ = "choice"
    return parse


def lower_names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names whose canonical spelling is lower case (precisions, methods)."""
    values = tuple(v.strip().lower() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return values
