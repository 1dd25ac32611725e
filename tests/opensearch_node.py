"""A real, throwaway OpenSearch node on loopback for tests and benches.

`make opensearch` fetches the distribution from Maven Central into a cache outside git and, when run as
root, creates the unprivileged user the node runs as (OpenSearch refuses to run as root). This module
starts `bin/opensearch` from that install with a config, data and logs of its own, waits until the
cluster is healthy and stops it again, leaving nothing running.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# Keep in step with the Makefile (OPENSEARCH_VERSION, OPENSEARCH_CACHE, OPENSEARCH_USER).
VERSION = "2.19.6"
USER = "mise-os"
HEAP = "-Xms512m -Xmx512m"
START_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0


class NodeError(RuntimeError):
    """The node did not come up (or died); the message carries the tail of its output."""


def default_home() -> Path:
    """Where `make opensearch` unpacks the distribution by default: root's home is not traversable by
    the unprivileged user the node runs as, so root uses /var/cache; anyone else their ~/.cache."""
    if os.geteuid() == 0:
        cache = Path("/var/cache/mise")
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mise"
    return cache / f"opensearch-{VERSION}" / f"opensearch-{VERSION}"


def find_home() -> Path | None:
    """The OpenSearch install to use: MISE_OPENSEARCH_HOME, else the default cache; None if absent."""
    configured = os.environ.get("MISE_OPENSEARCH_HOME")
    home = Path(configured) if configured else default_home()
    return home if (home / "bin" / "opensearch").is_file() else None


def _free_ports(count: int) -> list[int]:
    """Distinct loopback ports that were free a moment ago (all held open together while choosing)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _java_home() -> str | None:
    """The minimal distribution bundles no JDK: use OPENSEARCH_JAVA_HOME/JAVA_HOME, else `java` on PATH."""
    for var in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            return os.environ[var]
    java = shutil.which("java")
    return str(Path(java).resolve().parent.parent) if java else None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no output: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _health(url: str) -> str | None:
    """The cluster's status once it is at least yellow, else None (not answering yet, or red)."""
    try:
        with urllib.request.urlopen(f"{url}/_cluster/health?wait_for_status=yellow&timeout=1s", timeout=5) as rsp:
            status = json.load(rsp)["status"]
    except (OSError, ValueError, KeyError):  # URLError, refused, reset, 408 while waiting, half-started
        return None
    return str(status) if status in ("yellow", "green") else None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the node's process group, SIGKILL it if it has not gone within STOP_TIMEOUT."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
    # Whatever is left in the group (nothing, normally) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _command(home: Path) -> tuple[list[str], int | None]:
    """How to run bin/opensearch: as USER (via setpriv, which execs: no extra parent) when we are root."""
    command = [str(home / "bin" / "opensearch")]
    if os.geteuid() != 0:
        return command, None
    try:
        uid = pwd.getpwnam(USER).pw_uid
    except KeyError:
        raise NodeError(
            f"user {USER!r} is missing: run `make opensearch` (OpenSearch refuses to run as root)"
        ) from None
    return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--", *command], uid


@contextlib.contextmanager
def opensearch_node(home: Path, workdir: Path, start_timeout: float = START_TIMEOUT) -> Iterator[str]:
    """Run a single-node OpenSearch from `home` on loopback; yield its base URL, `http://127.0.0.1:PORT`.

    Config, data, logs and JVM temp files live in a fresh directory under /tmp (pytest's own temp dirs
    are 0700 root: the node's user could not traverse them); `workdir` receives a copy of the node's
    output and logs when it stops. Fails with the tail of the node's output if it is not healthy in time."""
    command, uid = _command(home)
    java_home = _java_home()
    if java_home is None:
        raise NodeError("no Java: install openjdk-17-jre-headless (`make opensearch` does) or set JAVA_HOME")
    workdir.mkdir(parents=True, exist_ok=True)
    nodedir = Path(tempfile.mkdtemp(prefix="mise-opensearch-", dir="/tmp"))
    try:
        config = nodedir / "config"
        shutil.copytree(home / "config", config)
        for sub in ("data", "logs", "tmp"):
            (nodedir / sub).mkdir()
        # bin/opensearch runs from `home`, so jvm.options' relative gc.log / heap dump / error file paths
        # would land in the shared install: point them at this node's directories.
        jvm_options = config / "jvm.options"
        jvm_options.write_text(
            jvm_options.read_text()
            .replace("file=logs/", f"file={nodedir / 'logs'}/")
            .replace("-XX:ErrorFile=logs/", f"-XX:ErrorFile={nodedir / 'logs'}/")
            .replace("-XX:HeapDumpPath=data", f"-XX:HeapDumpPath={nodedir / 'data'}")
        )
        http_port, transport_port = _free_ports(2)
        (config / "opensearch.yml").write_text(
            "\n".join(
                [
                    "cluster.name: mise-test",
                    "node.name: mise-test-node",
                    "discovery.type: single-node",
                    "network.host: 127.0.0.1",
                    f"http.port: {http_port}",
                    f"transport.port: {transport_port}",
                    f"path.data: {nodedir / 'data'}",
                    f"path.logs: {nodedir / 'logs'}",
                    "action.auto_create_index: true",
                    # Tests fill small disks; never flip indices read-only behind their back.
                    "cluster.routing.allocation.disk.threshold_enabled: false",
                    "",
                ]
            )
        )
        if uid is not None:
            for path in [nodedir, *nodedir.rglob("*")]:
                os.chown(path, uid, -1)
        env = {
            **os.environ,
            "OPENSEARCH_JAVA_HOME": java_home,
            "OPENSEARCH_PATH_CONF": str(config),
            "OPENSEARCH_TMPDIR": str(nodedir / "tmp"),
            "OPENSEARCH_JAVA_OPTS": HEAP,
        }
        env.pop("JAVA_TOOL_OPTIONS", None)
        output = nodedir / "output.log"
        url = f"http://127.0.0.1:{http_port}"
        with output.open("wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=nodedir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        try:
            deadline = time.monotonic() + start_timeout
            while _health(url) is None:
                if proc.poll() is not None:
                    raise NodeError(
                        f"OpenSearch exited with status {proc.returncode} before becoming healthy; "
                        f"last output (all of it: {workdir / 'opensearch-output.log'}):\n{_tail(output)}"
                    )
                if time.monotonic() > deadline:
                    raise NodeError(
                        f"OpenSearch at {url} not healthy (yellow/green) within {start_timeout:.0f}s; "
                        f"last output (all of it: {workdir / 'opensearch-output.log'}):\n{_tail(output)}"
                    )
                time.sleep(0.25)
            yield url
        finally:
            _stop(proc)
            with contextlib.suppress(OSError):
                shutil.copyfile(output, workdir / "opensearch-output.log")
                shutil.copytree(nodedir / "logs", workdir / "opensearch-logs", dirs_exist_ok=True)
    finally:
        shutil.rmtree(nodedir, ignore_errors=True)
