"""Importing recorded calls: ``mise import`` (a real subprocess) uploading to a real server, which analyses
each call in a Ray task with the emotion model and stores, indexes and records it like a live call.

- the synthetic dialogue imported has the same turns as the same call streamed live (ids, speakers,
  times; features and emotion scores to float noise), is searchable and plays back sample for sample;
- ``mise import`` killed halfway (SIGKILL) and run again finishes every call exactly once;
- bad uploads get 400, another tenant's key cannot see an imported call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.simulate import load_jsonl, play, read_ulaw_track, with_fresh_sids
from engine.g711 import decode_ulaw
from tests.support import API_KEY, OTHER_KEY, REPO, Server, data_path, wait_searchable
from tests.test_recording import wav

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server.start(ray_address, tmp_path_factory.mktemp("import"), MISE_EMOTION="1") as srv:
        yield srv


def mise_import(server: Server, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MISE_API_KEY": API_KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "import", "--url", server.http, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    keys = list(rows[0])
    path.write_text("\n".join([",".join(keys), *(",".join(r[k] for k in keys) for r in rows)]) + "\n")
    return path


def test_an_imported_call_has_the_turns_it_had_live(server: Server, tmp_path: Path, synthetic_capture: Path) -> None:
    live_sid = asyncio.run(
        play(server.ws, with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY), speed=25)
    ).call_sid
    live = wait_searchable(server, live_sid)
    folder = data_path("calls/synthetic_dialogue")
    rows = [{"inbound": str(folder / "inbound.wav"), "outbound": str(folder / "outbound.wav"),
             "call_sid": "CA" + "1" * 32, "from": "+15550100", "started_at": "2026-06-01T11:00:00+02:00"}]  # fmt: skip
    run = mise_import(server, str(manifest(tmp_path / "calls.csv", rows)))
    out = run.communicate(timeout=300)[0].decode()
    assert run.returncode == 0, out
    assert "1 imported, 0 already there, 0 failed" in out
    imported = wait_searchable(server, rows[0]["call_sid"])
    call = server.get(f"/v1/calls/{rows[0]['call_sid']}").json()
    assert call["end_reason"] == "imported" and call["from"] == "+15550100"
    assert call["started_at"] == "2026-06-01T09:00:00.000Z" and not call["live"]

    assert len(imported) == len(live) == 10
    for a, b in zip(live, imported, strict=True):
        for k in ("turn_id", "speaker", "track", "start_ms", "end_ms", "backchannel", "interrupted_other"):
            assert a[k] == b[k], (k, a, b)
        for k, v in a["features"].items():
            assert b["features"][k] == pytest.approx(v, abs=1e-6, nan_ok=True), k
        assert b["frustration"] == pytest.approx(a["frustration"], abs=1e-6)
        assert b["emotion"]["label"] == a["emotion"]["label"]
    # Its recording is the file's audio, sample for sample.
    played = wav(server.get(f"/v1/calls/{rows[0]['call_sid']}/audio"))
    for channel, track in enumerate(("inbound", "outbound")):
        source = decode_ulaw(read_ulaw_track(folder / f"{track}.wav"))
        assert np.array_equal(played[: len(source), channel], source)
    assert server.get(f"/v1/calls/{rows[0]['call_sid']}", key=OTHER_KEY).status_code == 404
    # Running it again imports nothing twice.
    again = mise_import(server, str(tmp_path / "calls.csv"), "--journal", str(tmp_path / "other-journal.jsonl"))
    out = again.communicate(timeout=120)[0].decode()
    assert again.returncode == 0 and "0 imported, 1 already there" in out, out


def test_an_import_killed_halfway_finishes_without_duplicates(server: Server, tmp_path: Path) -> None:
    folder = data_path("calls/synthetic_dialogue")
    sids = [f"CA{i:032x}" for i in range(1000, 1012)]
    rows = [{"inbound": str(folder / "inbound.wav"), "outbound": str(folder / "outbound.wav"), "call_sid": sid}
            for sid in sids]  # fmt: skip
    source = manifest(tmp_path / "many.csv", rows)
    first = mise_import(server, str(source), "--parallel", "2")
    journal = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        journals = list(tmp_path.glob(".mise-import-*.jsonl"))
        if journals and len(journals[0].read_bytes().splitlines()) >= 4:
            journal = journals[0]
            break
        assert first.poll() is None, first.communicate()[0].decode()
        time.sleep(0.2)
    assert journal is not None, "the import made no progress"
    first.send_signal(signal.SIGKILL)
    first.communicate()  # reaped, its pipe read to the end and closed
    done_before = len(journal.read_bytes().splitlines())
    assert done_before < len(sids), "killed too late to test resuming"
    second = mise_import(server, str(source), "--parallel", "2")
    out = second.communicate(timeout=600)[0].decode()
    assert second.returncode == 0, out
    assert f"{done_before} done before" in out
    listed = [c for c in server.get("/v1/calls", limit=500).json()["calls"] if c["call_sid"] in sids]
    assert sorted(c["call_sid"] for c in listed) == sids  # each exactly once
    assert all(c["end_reason"] == "imported" for c in listed)
    for sid in sids:
        assert len(wait_searchable(server, sid)) == 10


def test_bad_uploads_are_refused(server: Server) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    r = httpx.post(server.http + "/v1/calls/import", content=b"not audio at all", headers=headers)
    assert r.status_code == 400 and "soundfile" in r.json()["error"]
    r = httpx.post(server.http + "/v1/calls/import", content=b"", headers=headers)
    assert r.status_code == 400
    r = httpx.post(server.http + "/v1/calls/import", content=b"x", headers={"Authorization": "Bearer nope-nope-nope"})
    assert r.status_code == 401
