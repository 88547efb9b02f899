"""Reading JSON inputs with errors that name the file, line and column."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.errors import FormatError, InputError


def read_json(path: str | Path) -> Any:
    """Parses a JSON file.

    Raises:
        InputError: the file is missing or unreadable.
        FormatError: the content is not JSON (message gives line and column).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path=p) from None
    except IsADirectoryError:
        raise InputError("expected a file, got a folder", path=p) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=p) from None
    try:
        return json.loads(data)
    except UnicodeDecodeError as e:
        raise FormatError(f"not UTF-8 text at byte {e.start}", path=p) from None
    except json.JSONDecodeError as e:
        raise FormatError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", path=p) from None
    except RecursionError:
        raise FormatError("JSON nested too deeply", path=p) from None


def jsonable(v: Any) -> Any:
    """``v`` with mappings, sequences and numpy scalars turned into plain JSON types (``repr`` otherwise)."""
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    return repr(v)
