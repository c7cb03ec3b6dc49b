"""Fixtures of the Valkey tier."""

from __future__ import annotations

from typing import Final

import pytest

VALKEY_VARIABLES: Final = (
    "VALKEY_URL",
    "VALKEY_KEY_PREFIX",
    "VALKEY_CA_FILE",
    "VALKEY_CERT_FILE",
    "VALKEY_KEY_FILE",
)


@pytest.fixture
def no_valkey_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """None of the shell's VALKEY_* settings reaches `kubectl agents`; returns the patcher."""
    for name in VALKEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch
