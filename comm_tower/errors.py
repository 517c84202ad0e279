"""One error boundary for every command: bad input gives one line on stderr and exit code 2.

Exit codes: 0 done; 1 an internal error (a bug: one line, and `--debug` shows the traceback to report);
2 bad input (a flag, a file, a sample, a preset: the line names it and the fix); 130 interrupted (Ctrl-C).
`--debug` (or `COMM_DEBUG=1`) prints the traceback before the line.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_FLAG, DEBUG_ENV = "--debug", "COMM_DEBUG"
# what bad input raises: our DataError, SpecError, UsageError and ImageInputError are ValueErrors; a missing
# or unreadable file is an OSError; a missing optional extra an ImportError
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError)


class UsageError(ValueError):
    """A flag or an argument a command cannot use; the message names it and the fix."""


def one_line(err: BaseException) -> str:
    """The error's message on one line (white space folded)."""
    return " ".join(str(err).split()) or type(err).__name__


def wants_debug(argv: Sequence[str] | None) -> bool:
    """`--debug` among the arguments (or on the command line), or `COMM_DEBUG=1` in the environment."""
    args = sys.argv[1:] if argv is None else argv
    return DEBUG_FLAG in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_command(
    prog: str, main: Callable[[list[str] | None], int | None], argv: list[str] | None = None
) -> int:
    """Run `main(argv)` and return 0; what it raises becomes one line on stderr and `SystemExit(code)`."""
    code = _run(prog, main, argv)
    if code != EXIT_OK:
        raise SystemExit(code)
    return EXIT_OK


def _run(prog: str, main: Callable[[list[str] | None], int | None], argv: list[str] | None) -> int:
    debug = wants_debug(argv)
    try:
        return int(main(argv) or EXIT_OK)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except INPUT_ERRORS as err:
        _report(prog, one_line(err), debug)
        return EXIT_BAD_INPUT
    except Exception as err:
        hint = "" if debug else f"; rerun with {DEBUG_FLAG} for the traceback and report it"
        _report(prog, f"internal error: {type(err).__name__}: {one_line(err)}{hint}", debug)
        return EXIT_INTERNAL


def _report(prog: str, message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
