"""Fixtures of the fault tests (`make faults`); the session's dev server and moto come from tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from starter.devserver import free_port
from tests.fault_support import CountingMotoServer


@pytest.fixture
def counting_moto() -> Iterator[CountingMotoServer]:
    """A moto server of the test's own, logging every request it serves."""
    server = CountingMotoServer(free_port())
    server.start()
    yield server
    server.stop()
