"""Shared fixtures: test data, one real Ray instance per session, real uvicorn servers joined to it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.opensearch_node import default_home, find_home, opensearch_node
from tests.s3_node import default_binary, find_binary, s3_node
from tests.support import CHROMIUM, CHROMIUM_ARGS, Server, data_path, unavailable

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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium, driven by Playwright (never a downloaded browser)."""
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is absent (make test installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def opensearch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenSearch node: MISE_TEST_OPENSEARCH_URL if set (an external node), else one started on loopback
    for the session from the install `make opensearch` provides (MISE_OPENSEARCH_HOME or the default cache)."""
    external = os.environ.get("MISE_TEST_OPENSEARCH_URL")
    if external:
        yield external.rstrip("/")
        return
    home = find_home()
    if home is None:
        looked = os.environ.get("MISE_OPENSEARCH_HOME") or default_home()
        unavailable(
            f"no OpenSearch install at {looked} (MISE_OPENSEARCH_HOME, default: the cache): run `make opensearch`, "
            "or set MISE_TEST_OPENSEARCH_URL to a running node"
        )
        return
    with opensearch_node(home, tmp_path_factory.mktemp("opensearch")) as url:
        yield url


@pytest.fixture(scope="session")
def s3_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-compatible server: SeaweedFS from the build `make seaweedfs` caches (MISE_SEAWEEDFS or the
    default cache), on loopback for the session."""
    binary = find_binary()
    if binary is None:
        looked = os.environ.get("MISE_SEAWEEDFS") or default_binary()
        unavailable(f"no SeaweedFS binary at {looked} (MISE_SEAWEEDFS, default: the cache): run `make seaweedfs`")
        return
    with s3_node(binary, tmp_path_factory.mktemp("seaweedfs")) as url:
        yield url
