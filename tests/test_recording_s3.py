"""Recordings in object storage: a real server with MISE_AUDIO_BUCKET on a real S3-compatible server
(SeaweedFS, tests/s3_node.py), read back through the API and from the bucket itself.

A stream's track files are written locally while it is live and uploaded when it ends; the objects are
the decoded source sample for sample (5% of frames dropped: those silence), playback and Range reads
come from the bucket, and erasure removes the objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
import websockets

from api.simulate import load_jsonl, play, with_fresh_sids
from engine.g711 import decode_ulaw
from engine.store.audio import recording_key
from tests.support import API_KEY, OTHER_KEY, Server, send_paced, track_audio
from tests.test_recording import dropped_and_reordered, expected_audio, wav

pytestmark = pytest.mark.integration

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "mise", "AWS_SECRET_ACCESS_KEY": "mise", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def bucket(s3_url: str) -> Any:
    client = boto3.client(
        "s3", endpoint_url=s3_url, aws_access_key_id="mise", aws_secret_access_key="mise", region_name="us-east-1"
    )
    client.create_bucket(Bucket="mise-recordings")
    return client


@pytest.fixture(scope="module")
def s3_server(ray_address: str, s3_url: str, bucket: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"MISE_AUDIO_BUCKET": "mise-recordings", "MISE_AUDIO_S3_ENDPOINT": s3_url, **CREDENTIALS}
    with Server.start(ray_address, tmp_path_factory.mktemp("s3server"), **env) as srv:
        yield srv


def test_recordings_go_to_object_storage_sample_for_sample(
    s3_server: Server, bucket: Any, synthetic_capture: Path
) -> None:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    sent, dropped = dropped_and_reordered(messages, seed=7)
    call_sid = asyncio.run(play(s3_server.ws, sent, speed=25.0)).call_sid
    call = s3_server.wait_call(call_sid)
    for track in ("inbound", "outbound"):
        key = "recordings/" + recording_key("acme", call_sid, call["stream_sid"], track)
        stored = bucket.get_object(Bucket="mise-recordings", Key=key)["Body"].read()
        expected = expected_audio(messages, dropped, track)
        assert np.array_equal(decode_ulaw(stored), expected), f"{track}: the object differs from the source"
        assert not (s3_server.data_dir / "recordings" / key.removeprefix("recordings/")).exists()  # uploaded
        played = wav(s3_server.get(f"/v1/calls/{call_sid}/audio", track=track))
        assert np.array_equal(played[:, 0], expected)
    full = s3_server.get(f"/v1/calls/{call_sid}/audio").content
    part = httpx.get(
        s3_server.http + f"/v1/calls/{call_sid}/audio",
        headers={"Authorization": f"Bearer {API_KEY}", "Range": "bytes=200000-200999"},
    )
    assert part.status_code == 206 and part.content == full[200000:201000]
    assert s3_server.get(f"/v1/calls/{call_sid}/audio", key=OTHER_KEY).status_code == 404

    r = httpx.delete(s3_server.http + f"/v1/calls/{call_sid}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200 and r.json()["erased"]["recording_files"] == 2
    listed = bucket.list_objects_v2(Bucket="mise-recordings", Prefix=f"recordings/acme/{call_sid}/")
    assert listed.get("KeyCount", 0) == 0


def test_a_killed_servers_recording_reaches_the_bucket_after_a_restart(
    ray_address: str, s3_server: Server, bucket: Any, synthetic_capture: Path
) -> None:
    """Files a process killed mid-call left locally are uploaded once the call is no longer live. The module's
    server is the one killed (this test comes last in the module); another starts on its data folder."""
    env = dict(s3_server.env)
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    call_sid = messages[1]["start"]["callSid"]
    first, tmp_path = s3_server, s3_server.data_dir

    async def stream_then_kill() -> None:
        async with websockets.connect(first.ws) as ws:
            await send_paced(ws, messages[:1000], 10.0)  # ~10 s of the call
            await asyncio.sleep(1.0)  # written locally (every 0.5 s), not uploaded: the call is live
            first.process.kill()
            first.process.wait()

    with contextlib.suppress(websockets.ConnectionClosed, OSError):
        asyncio.run(stream_then_kill())
    first.cleanup_actors()
    stream_sid = messages[1]["start"]["streamSid"]
    key = "recordings/" + recording_key("acme", call_sid, stream_sid, "inbound")
    local = tmp_path / "recordings" / key.removeprefix("recordings/")
    assert local.exists() and bucket.list_objects_v2(Bucket="mise-recordings", Prefix=key).get("KeyCount", 0) == 0
    second = Server.launch(ray_address, tmp_path, namespace=first.namespace, **env)
    try:
        deadline = time.monotonic() + 90  # the restart ends the call as lost; the next sweep uploads its files
        while bucket.list_objects_v2(Bucket="mise-recordings", Prefix=key).get("KeyCount", 0) == 0:
            assert time.monotonic() < deadline, second.log()
            time.sleep(0.5)
        stored = bucket.get_object(Bucket="mise-recordings", Key=key)["Body"].read()
        assert len(stored) >= 9000 * 8 and not local.exists()
        assert np.array_equal(decode_ulaw(stored), track_audio(messages, "inbound")[: len(stored)])
        assert second.get(f"/v1/calls/{call_sid}").json()["end_reason"] == "lost"
    finally:
        second.stop()
