"""A real S3-compatible server on loopback for tests: SeaweedFS (Apache-2.0), built from the Go module proxy
by `make seaweedfs` into a cache outside git, started here with a data folder of its own (master, volume,
filer and S3 gateway in one process, no credentials configured: any key is accepted) and stopped after.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

# Keep in step with the Makefile (SEAWEEDFS_VERSION, SEAWEEDFS_CACHE).
VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
START_TIMEOUT = 60.0


def default_binary() -> Path:
    if os.geteuid() == 0:
        cache = Path("/var/cache/mise")
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mise"
    return cache / f"seaweedfs-{VERSION}" / "weed"


def find_binary() -> Path | None:
    """MISE_SEAWEEDFS (a `weed` binary), else the default cache; None if absent."""
    configured = os.environ.get("MISE_SEAWEEDFS")
    binary = Path(configured) if configured else default_binary()
    return binary if binary.is_file() else None


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports() -> list[int]:
    """Four ports, each free together with its gRPC twin (SeaweedFS listens on port + 10000 as well)."""
    base = 20000 + (os.getpid() * 7) % 9000
    for start in range(base, base + 2000, 4):
        ports = [start, start + 1, start + 2, start + 3]
        if all(_free(p) and _free(p + 10000) for p in ports):
            return ports
    raise RuntimeError("no free ports for SeaweedFS")


@contextlib.contextmanager
def s3_node(binary: Path, data: Path) -> Iterator[str]:
    """The S3 endpoint URL of a SeaweedFS server running from ``binary`` with its data in ``data``."""
    master, volume, filer, s3 = _ports()
    data.mkdir(parents=True, exist_ok=True)
    log = open(data / "weed.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            str(binary), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-volume.port={volume}", "-filer", f"-filer.port={filer}",
            "-s3", f"-s3.port={s3}", "-master.volumeSizeLimitMB=64", "-volume.max=16",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{s3}"
    try:
        _wait(url, process, data / "weed.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=3)  # a throwaway server: not worth waiting on its shutdown
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3", endpoint_url=url, aws_access_key_id="mise", aws_secret_access_key="mise", region_name="us-east-1"
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(BotoCoreError, ClientError):
            client.list_buckets()
            return
        time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS not up after {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")
