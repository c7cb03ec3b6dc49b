"""The unit tier never reads the caller's environment.

``settings.process_environment()`` is the one place the operator and the plugin
read the environment (``KUBECONFIG``, the in-cluster ``KUBERNETES_SERVICE_HOST``,
an exec plugin's environment). Here it is guarded: a unit test that reaches it fails,
naming the fix, unless it asks for the ``environment`` fixture, a mapping of its
own that it fills. So ``source .local/env`` or a shell's ``VALKEY_URL`` can
never change a unit test's outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from controller import settings


class EnvironmentRead(AssertionError):
    pass


def _guarded() -> dict[str, str]:
    raise EnvironmentRead(
        "a unit test read the caller's environment: pass settings.load() a mapping, "
        "or use the `environment` fixture"
    )


@pytest.fixture(autouse=True)
def _no_caller_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "process_environment", _guarded)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs the command line (``logs.configure``) leaves the root logger as
    it found it: no handler bound to this test's captured output."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The process environment as this test sets it: empty until it does."""
    own: dict[str, str] = {}
    monkeypatch.setattr(settings, "process_environment", lambda: own)
    return own
