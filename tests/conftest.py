"""Shared fixtures: test data, one real Ray instance per session, real uvicorn servers joined to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Server, data_path

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def synthetic_capture() -> Path:
    return data_path("calls/synthetic_dialogue/twilio.jsonl")


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A real local Ray instance (loopback-only, quiet, temp dir of its own), shared by all tests."""
    from actors import runtime

    with runtime.private_cluster("mise-tests") as address:
        yield address


@pytest.fixture(scope="module")
def server(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `mise serve` (uvicorn) per test module, joined to the session's Ray."""
    with Server.start(ray_address, tmp_path_factory.mktemp("server")) as srv:
        yield srv
