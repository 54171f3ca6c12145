"""One output helper for every command: a rich table on a terminal, aligned plain text when
piped (scripts and `cut`/`awk` must not meet box characters), `--json` for scripts, `--quiet`
for cron. Colour only on a terminal and never when NO_COLOR is set."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, Iterable, Sequence

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text


def _console(stream) -> Console:
    tty = stream.isatty()
    no_color = bool(os.environ.get("NO_COLOR")) or not tty
    # Piped output (cron mail, logs) is not cut to 80 columns.
    width = None if tty else int(os.environ.get("COLUMNS") or 200)
    return Console(file=stream, no_color=no_color, highlight=False, soft_wrap=True,
                   force_terminal=False if not tty else None, width=width)


# --- values for people (JSON keeps the raw numbers) -------------------------------------------

def fmt_duration(seconds: float | None) -> str:
    """`1h02m`, `4m05s`, `12s`, `-3m10s`: a duration a person reads at a glance."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    s = abs(int(round(seconds)))
    if s >= 86400:
        return f"{sign}{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{sign}{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{sign}{s // 60}m{s % 60:02d}s"
    return f"{sign}{s}s"


def fmt_time(timestamp: str | None, now: datetime | None = None) -> str:
    """An ISO-8601 time in this machine's zone, as squeue shows times: `14:03:10` today,
    `2026-12-06 14:03` another day."""
    if timestamp is None:
        return "-"
    when = datetime.fromisoformat(timestamp).astimezone()
    today = (now or datetime.now(timezone.utc)).astimezone().date()
    return when.strftime("%H:%M:%S" if when.date() == today else "%Y-%m-%d %H:%M")


def fmt_margin(margin_s: float) -> str:
    """`met by 4m12s` or `missed by 1h02m`: when a job ended against its deadline."""
    return f"{'met' if margin_s >= 0 else 'missed'} by {fmt_duration(abs(margin_s))}"


def fmt_ratio(value: float | None) -> str:
    """Three significant digits, zeros kept so a column reads evenly (0.0821, 1.00, 12.5, 240),
    never scientific notation."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if value == 0:
        return "0"
    return f"{value:#.3g}" if abs(value) >= 0.001 else f"{value:.4f}"


def fmt_gpu_hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_value(key: str, value: Any) -> str:
    """A summary value for people, by the naming of its key: `*_s` durations, `gpu_hours`,
    other floats as ratios."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if key.endswith("_s"):
        return fmt_duration(value)
    if "gpu_hours" in key and "_vs_" not in key:
        return fmt_gpu_hours(value)
    if isinstance(value, float):
        return fmt_ratio(value)
    return str(value)


def _cell(value: Any) -> str:
    """One line per row whatever the value: None is `-`, newlines become spaces."""
    return "-" if value is None else " ".join(str(value).splitlines())


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned with two spaces, a header line, no borders; the last column unpadded."""
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    lines = []
    for cells in [list(columns)] + [list(r) for r in rows]:
        padded = [cell.ljust(w) for cell, w in zip(cells[:-1], widths)] + cells[-1:]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


@dataclass
class Output:
    """Where a command's results go. `json_mode` prints exactly one JSON document on stdout."""

    json_mode: bool = False
    quiet: bool = False
    out: Console = field(default_factory=lambda: _console(sys.stdout))
    err: Console = field(default_factory=lambda: _console(sys.stderr))

    def emit(self, data: Any, *, human: str | None = None) -> None:
        """The result of a command: JSON in `--json` mode, else `human` (when given)."""
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        elif human is not None and not self.quiet:
            self.out.print(human, markup=False)

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
              data: Any = None, title: str | None = None) -> None:
        """A listing: a rich table on a terminal, aligned plain text when piped (the title is
        left out there: the first line is the header), or `data` (defaults to the rows as
        dicts) with `--json`."""
        rows = [list(r) for r in rows]
        if self.json_mode:
            if data is None:
                data = [dict(zip(columns, r)) for r in rows]
            self.emit(data)
            return
        if self.quiet:
            return
        cells = [[_cell(v) for v in r] for r in rows]
        if not self.out.is_terminal:
            self.out.print(plain_table(columns, cells), markup=False, highlight=False)
            return
        table = Table(title=title, show_lines=False)
        for col in columns:
            table.add_column(col, overflow="fold")
        for r in cells:
            table.add_row(*[Text(c) for c in r])  # values are data, never rich markup
        self.out.print(table)

    def info(self, message: str) -> None:
        """Progress and notes for people; silent with --quiet or --json (kept off stdout)."""
        if not self.quiet and not self.json_mode:
            self.err.print(message, markup=False)

    def error(self, message: str) -> None:
        """A failure reported after the output it concerns: on stderr even with --quiet."""
        self.err.print(f"ptctl: error: {message}", markup=False)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"ptctl: warning: {message}", markup=False)

    def progress_enabled(self) -> bool:
        return not self.quiet and not self.json_mode and sys.stderr.isatty()


# Options shared by every command that prints results (Typer's public API only).
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
