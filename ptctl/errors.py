"""Known errors: each becomes one line on stderr and a documented exit code.

Exit codes (documented in the README):
  0  ok
  1  error (a job failed, a corrupt file, a failed check)
  2  bad input or usage (spec, trace, flags, data files)
  3  the job ended without reaching its target (`ptctl run`, `submit --wait`)
  75 Slurm unreachable (EX_TEMPFAIL: retry later)
"""

from __future__ import annotations

import reprlib
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_TARGET_NOT_REACHED = 3
EXIT_SLURM_UNREACHABLE = 75


# A quoted value is cut to QUOTE_CHARS, a whole message to MESSAGE_CHARS: a 10 MB field or an
# exploding YAML value must not turn one error line into megabytes of stderr.
QUOTE_CHARS = 80
MESSAGE_CHARS = 600

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = QUOTE_CHARS
_REPR.maxlevel = 3


def excerpt(value: Any, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)` in at most `limit` characters (cut with `...`): the one way error
    messages quote a value from the user's input."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's 4300-digit str() limit
        text = f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(message: str, limit: int = MESSAGE_CHARS) -> str:
    """`message` on one line of at most `limit` characters."""
    flat = " ".join(str(message).splitlines())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


class PtctlError(Exception):
    """An error the user can act on; printed as one line, never a traceback."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str = "") -> None:
        super().__init__(one_line(message))


class BadInputError(PtctlError):
    """Malformed spec, trace, flag or data file: the message names the field or file."""

    exit_code = EXIT_BAD_INPUT


class CorruptFileError(PtctlError):
    """A bank, checkpoint or state file fails its checks: the message names the file."""

    exit_code = EXIT_ERROR


class NotFoundError(PtctlError):
    """An unknown job id, bank entry or profile."""

    exit_code = EXIT_ERROR


class SlurmUnreachableError(PtctlError):
    """sbatch/squeue could not reach slurmctld: a transient condition, retry later."""

    exit_code = EXIT_SLURM_UNREACHABLE


def bounded(text: object, limit: int = 300) -> str:
    """`text` on one line and at most `limit` characters, for quoting a library's error inside
    ours: a short message is kept whole; a long one is cut at a word and ends with `...`."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    cut = line[:limit - 3]
    if cut.rfind(" ") > limit // 2:
        cut = cut[:cut.rfind(" ")]
    return cut.rstrip(" ,;:") + "..."
