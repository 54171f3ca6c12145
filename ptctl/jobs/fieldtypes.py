"""Type checks of spec values against dataclass field annotations, and the path helpers the
spec's checks share. Every message quotes values through `excerpt`, so it stays bounded."""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Any

from ptctl.errors import BadInputError, excerpt


def path_is(path: Path, test: str) -> bool:
    """`path.is_file()` / `.exists()`, False where the OS refuses the name (too long, NUL)."""
    try:
        return getattr(path, test)()
    except (OSError, ValueError):
        return False


def key_text(key: Any) -> str:
    """A mapping key as a path component, bounded like a quoted value."""
    text = str(key) if isinstance(key, (str, int)) and not isinstance(key, bool) else excerpt(key)
    return text if len(text) <= 40 and text.isprintable() else excerpt(text, 40)


def check_type(value: Any, annotation: Any, path: str) -> Any:
    """Check a YAML value against a field annotation; ints are accepted where floats are."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return check_type(value, inner[0], path)
    if origin is list:
        if not isinstance(value, list):
            raise BadInputError(f"{path}: got {excerpt(value)}, expected a list")
        return [check_type(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise BadInputError(f"{path}: got {excerpt(value)}, expected a mapping")
        return {str(k): check_type(v, args[1], f"{path}.{key_text(k)}") for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInputError(f"{path}: got {excerpt(value)}, expected a number")
        try:
            number = float(value)
        except OverflowError:  # an int past float's range
            number = math.inf
        if not math.isfinite(number):
            raise BadInputError(f"{path}: got {excerpt(value)}, expected a finite number")
        return number
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInputError(f"{path}: got {excerpt(value)}, expected an integer")
        return value
    if annotation is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and path.endswith(
                "deadline"):
            raise BadInputError(f"{path}: got {excerpt(value)}, expected a duration with a unit, "
                                "like 90m, or an ISO-8601 time")
        if not isinstance(value, str):
            raise BadInputError(f"{path}: got {excerpt(value)}, expected a string")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise BadInputError(f"{path}: got {excerpt(value)}, expected true or false")
        return value
    return value
