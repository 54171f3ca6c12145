"""One output helper for every command: a rich table for people, `--json` for scripts,
`--quiet` for cron. Colour only on a TTY and never when NO_COLOR is set."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table


def _console(stream) -> Console:
    tty = stream.isatty()
    no_color = bool(os.environ.get("NO_COLOR")) or not tty
    # Piped output (cron mail, logs) is not cut to 80 columns.
    width = None if tty else int(os.environ.get("COLUMNS") or 200)
    return Console(file=stream, no_color=no_color, highlight=False, soft_wrap=True,
                   force_terminal=False if not tty else None, width=width)


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
        """A listing: a rich table, or `data` (defaults to the rows as dicts) with `--json`."""
        rows = [list(r) for r in rows]
        if self.json_mode:
            if data is None:
                data = [dict(zip(columns, r)) for r in rows]
            self.emit(data)
            return
        if self.quiet:
            return
        table = Table(title=title, show_lines=False)
        for col in columns:
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(*["" if v is None else str(v) for v in r])
        self.out.print(table)

    def info(self, message: str) -> None:
        """Progress and notes for people; silent with --quiet or --json (kept off stdout)."""
        if not self.quiet and not self.json_mode:
            self.err.print(message, markup=False)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"ptctl: warning: {message}", markup=False)

    def progress_enabled(self) -> bool:
        return not self.quiet and not self.json_mode and sys.stderr.isatty()


# Options shared by every command that prints results (Typer's public API only).
import typer  # noqa: E402
from typing import Annotated  # noqa: E402

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
