"""Known errors: each becomes one line on stderr and a documented exit code.

Exit codes (documented in the README):
  0  ok
  1  error (a job failed, a corrupt file, a failed check)
  2  bad input or usage (spec, trace, flags, data files)
  3  the job ended without reaching its target (`ptctl run`, `submit --wait`)
  75 Slurm unreachable (EX_TEMPFAIL: retry later)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_TARGET_NOT_REACHED = 3
EXIT_SLURM_UNREACHABLE = 75


class PtctlError(Exception):
    """An error the user can act on; printed as one line, never a traceback."""

    exit_code = EXIT_ERROR


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
