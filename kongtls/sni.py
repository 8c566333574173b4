"""Server names: matching a name against exact and wildcard patterns."""

from __future__ import annotations


def nameMatches(pattern: str, name: str) -> bool:
    """True if C{name} is C{pattern}, or C{pattern} is ``*.suffix`` covering one label."""
    if pattern == name:
        return True
    if pattern.startswith("*."):
        head, dot, rest = name.partition(".")
        return bool(head) and bool(dot) and rest == pattern[2:]
    if pattern.endswith(".*"):
        head, dot, rest = name.rpartition(".")
        return bool(rest) and bool(dot) and head == pattern[:-2]
    return False
