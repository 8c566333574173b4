"""``--access-log``: one JSON line per request, Kong's serializer fields, from the log
phase (after the plugins' own log handlers)."""

from __future__ import annotations

import json
import sys
from typing import IO, Any


class AccessLog:
    """Appends JSON lines to a file, or to standard output for ``-``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._file: IO[str] = sys.stdout if target == "-" else open(
            target, "a", encoding="utf-8")

    def write(self, entry: dict[str, Any]) -> None:
        self._file.write(json.dumps(entry, separators=(",", ":"), default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not sys.stdout:
            self._file.close()
