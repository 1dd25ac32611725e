"""Shared fixtures: test data, one real Ray instance per session, real uvicorn servers joined to it."""

from __future__ import annotations

import logging
import os
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

    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    temp = tempfile.mkdtemp(prefix="mray")  # short: Ray's socket paths must fit 107 bytes
    ctx = ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        object_store_memory=256 << 20,
        namespace="mise-tests",
        _temp_dir=temp,
    )
    yield str(ctx.address_info["gcs_address"])
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def server(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `mise serve` (uvicorn) per test module, joined to the session's Ray."""
    with Server.start(ray_address, tmp_path_factory.mktemp("server")) as srv:
        yield srv
