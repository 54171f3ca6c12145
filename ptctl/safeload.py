"""Bounded readers of user files: YAML, JSON and CSV, never pickle.

Every limit is checked before the value is used, and every failure is one error naming the file
(and line where there is one): a file over its size limit, nesting deeper than MAX_DEPTH, an
integer longer than MAX_INT_DIGITS, a YAML alias (`*name`: "billion laughs" expand
exponentially, and no job spec needs them), a duplicated YAML key (YAML keeps the last one
silently), a CSV field over csv's 128 KiB limit, an unclosed CSV quote (it silently swallows the
rows after it), text that is not UTF-8.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

from ptctl.errors import BadInputError

MAX_SPEC_BYTES = 1 << 20        # job specs, run-folder spec copies, convergence files
MAX_RECORD_BYTES = 64 << 20     # a checkpoint's record.json
MAX_DATA_BYTES = 1 << 30        # task data files and traces
MAX_DEPTH = 32
MAX_INT_DIGITS = 30
CSV_FIELD_BYTES = csv.field_size_limit()  # 128 KiB unless someone changed it


def _size(limit: int) -> str:
    return f"{limit >> 30} GiB" if limit >= 1 << 30 else f"{limit >> 20} MiB"


def check_size(path: Path, limit: int, origin: str, error: type = BadInputError) -> None:
    """Refuse a file over `limit` bytes before reading it."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"{origin}: cannot read ({exc.strerror})") from None
    if size > limit:
        raise error(f"{origin}: {size} bytes, over the {_size(limit)} limit")


def read_text(path: Path, origin: str, limit: int = MAX_SPEC_BYTES,
              error: type = BadInputError) -> str:
    """A UTF-8 text file of at most `limit` bytes (a BOM is dropped)."""
    check_size(path, limit, origin, error)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{origin}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{origin}: cannot read ({exc.strerror})") from None


# --- YAML ------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases, duplicate keys, deep nesting or huge integers."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{event.anchor}) are not allowed", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the base class says so
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}"[:120], key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        digits = sum(c.isalnum() for c in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of {digits} digits (at most {MAX_INT_DIGITS})",
                node.start_mark)
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def parse_yaml(text: str, origin: str, error: type = BadInputError) -> Any:
    """One YAML document from `text`, within the limits above."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark else ""
        raise error(f"{origin}: not valid YAML ({where}{exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise error(f"{origin}: not valid YAML ({exc})") from None


def load_yaml(path: Path, origin: str, limit: int = MAX_SPEC_BYTES,
              error: type = BadInputError) -> Any:
    return parse_yaml(read_text(path, origin, limit, error), origin, error)


# --- JSON ------------------------------------------------------------------------------------

class _Refused(ValueError):
    pass


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _no_constant(name: str) -> float:
    raise _Refused(f"{name} is not a number here")


def _depth(obj: Any) -> int:
    """Nesting depth of lists and dicts, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                  else item))
    return deepest


def parse_json(text: str, origin: str, error: type = BadInputError, allow_nan: bool = False,
               max_depth: int = MAX_DEPTH) -> Any:
    """JSON from `text`, nested at most `max_depth` deep; NaN/Infinity only with `allow_nan`."""
    hooks: dict[str, Any] = {"parse_int": _bounded_int}
    if not allow_nan:
        hooks["parse_constant"] = _no_constant
    try:
        value = json.loads(text, **hooks)
    except json.JSONDecodeError as exc:
        where = f", line {exc.lineno}" if "\n" in text.strip() else ""
        raise error(f"{origin}: not valid JSON ({exc.msg}{where})") from None
    except _Refused as exc:
        raise error(f"{origin}: {exc}") from None
    except RecursionError:
        value = None
        depth = max_depth + 1
    else:
        depth = _depth(value)
    if depth > max_depth:
        raise error(f"{origin}: nested deeper than {max_depth} levels")
    return value


def load_json(path: Path, origin: str, limit: int = MAX_SPEC_BYTES, error: type = BadInputError,
              allow_nan: bool = False, max_depth: int = MAX_DEPTH) -> Any:
    return parse_json(read_text(path, origin, limit, error), origin, error, allow_nan, max_depth)


# --- CSV -------------------------------------------------------------------------------------

def read_csv(path: Path, origin: str, limit: int = MAX_DATA_BYTES
             ) -> tuple[list[str], list[tuple[int, dict[str, str | None]]]]:
    """(header, [(line, row)]) of a CSV file with a header; `line` is where the row starts and
    a short row's missing columns are None. Blank lines are skipped."""
    check_size(path, limit, origin)
    rows: list[tuple[int, dict[str, str | None]]] = []
    line = 1
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, strict=True)
            header = [h.strip() for h in next(reader, [])]
            while True:
                line = reader.line_num + 1
                row = next(reader, None)
                if row is None:
                    break
                if not row:
                    continue
                if len(row) > len(header):
                    raise BadInputError(f"{origin}:line {line}: {len(row)} fields, the header "
                                        f"has {len(header)}")
                rows.append((line, dict(zip(header, row + [None] * (len(header) - len(row))))))
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{origin}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                            ) from None
    except csv.Error as exc:
        if "end of data" in str(exc):
            problem = "unclosed quote: the quoted field runs to the end of the file"
        elif "field limit" in str(exc):
            problem = f"a field over {CSV_FIELD_BYTES // 1024} KiB"
        else:
            problem = f"malformed CSV ({exc})"
        raise BadInputError(f"{origin}:line {line}: {problem}") from None
    return header, rows


PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def pickle_weights(folder: Path) -> list[str]:
    """Pickled weight files in a model folder that holds no safetensors weights."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return []
    return sorted({p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern)})
