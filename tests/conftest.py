"""Shared fixtures: test data, one real Ray instance per session, real uvicorn servers joined to it."""

from __future__ import annotations

import shutil
import tempfile
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
    import ray

    from actors import runtime

    temp = tempfile.mkdtemp(prefix="mray")
    runtime.connect(None, namespace="mise-tests", num_cpus=2, temp_dir=temp)
    yield runtime.gcs_address()
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def server(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `mise serve` (uvicorn) per test module, joined to the session's Ray."""
    with Server.start(ray_address, tmp_path_factory.mktemp("server")) as srv:
        yield srv
