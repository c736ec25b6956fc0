"""What the examples' training programs share: argument types and when to show progress."""

import argparse
import os
import sys
from pathlib import Path


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def show_progress() -> bool:
    """Progress lines go to stderr when it is a terminal, or when ATTNKIT_PROGRESS is set."""
    return sys.stderr.isatty() or bool(os.environ.get("ATTNKIT_PROGRESS"))


def run_program(main) -> int:
    """Runs a program's main(); bad input (a ValueError naming the argument) becomes one error
    line on stderr and exit code 2, as everywhere in attnkit."""
    try:
        return main()
    except ValueError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        return 2
