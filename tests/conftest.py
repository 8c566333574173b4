"""pytest runs the trial TestCases first: once a pytest-twisted test has started the
reactor in its greenlet, trial's own reactor spinning no longer works."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase


def _isTrial(item: Any) -> bool:
    cls = getattr(item, "cls", None)
    return cls is not None and issubclass(cls, SynchronousTestCase)


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    items.sort(key=lambda item: 0 if _isTrial(item) else 1)
