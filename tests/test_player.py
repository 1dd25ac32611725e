"""The call replay's player in real headless Chromium against a real server with a real recorded call:
clicking a turn plays the recording from the turn's start (the audio element's currentTime), the playhead
moves across the lanes, the keys seek, each speaker's pitch and energy curves are drawn, and a search hit
opens the call playing at the hit. Saves docs/screenshots/replay-player.png for the README.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.simulate import load_jsonl, with_fresh_sids
from tests.support import API_KEY, REPO, Server, stream_calls, wait_searchable

pytestmark = pytest.mark.integration

SHOTS = Path(os.environ.get("MISE_SCREENSHOTS", REPO / "docs" / "screenshots"))
AUDIO = "document.getElementById('audio')"


@pytest.fixture(scope="module")
def recorded_call(
    ray_address: str, tmp_path_factory: pytest.TempPathFactory, synthetic_capture: Path
) -> Iterator[tuple[Server, str, list[dict[str, Any]]]]:
    messages = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
    with Server.start(ray_address, tmp_path_factory.mktemp("player"), MISE_EMOTION="1") as srv:
        stream_calls(srv, [messages], 10.0)  # in a thread: Playwright's loop may be running here
        call_sid = messages[1]["start"]["callSid"]
        turns = wait_searchable(srv, call_sid)
        yield srv, call_sid, turns


def playing_near(page: Any, seconds: float, slack: float = 1.5) -> None:
    """Wait until the audio element plays at ``seconds`` (within the first ``slack`` seconds after it)."""
    page.wait_for_function(
        f"!{AUDIO}.paused && {AUDIO}.currentTime >= {seconds - 0.05} && {AUDIO}.currentTime < {seconds + slack}",
        timeout=15_000,
    )


def test_clicking_a_turn_plays_it_and_the_playhead_moves(browser: Any, recorded_call: Any) -> None:
    srv, call_sid, turns = recorded_call
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{srv.http}/?api_key={API_KEY}#/call/{call_sid}")
    page.wait_for_function(f"document.querySelectorAll('#timeline .turn').length === {len(turns)}")
    page.wait_for_function(f"{AUDIO}.readyState >= 1 && {AUDIO}.duration > 56")

    turn = next(t for t in turns if t["speaker"] == "caller" and t["start_ms"] > 10_000)
    page.click(f"#timeline .turn[data-turn-id='{turn['turn_id']}']")
    playing_near(page, turn["start_ms"] / 1000)
    first = page.evaluate("[Number(document.getElementById('playhead').dataset.ms), "
                          "document.getElementById('playhead').getBoundingClientRect().left]")  # fmt: skip
    page.wait_for_timeout(800)
    later = page.evaluate("[Number(document.getElementById('playhead').dataset.ms), "
                          "document.getElementById('playhead').getBoundingClientRect().left]")  # fmt: skip
    assert later[0] > first[0] and later[1] > first[1], (first, later)
    # The turn under the playhead is the one shown; its pitch and energy curves are drawn for both speakers.
    assert page.text_content("#detail h3") == f"caller turn {turn['turn_id']}"
    curves = page.evaluate(
        "[...document.querySelectorAll('#curves polyline')].map(l => l.dataset.speaker + ':' + l.dataset.feature)"
    )
    assert {"caller:pitch_mean_hz", "agent:pitch_mean_hz", "caller:energy_db", "agent:energy_db"} <= set(curves)
    page.screenshot(path=str(SHOTS / "replay-player.png"))

    # Keys: "]" plays the next turn from its start; space pauses.
    after = min(t["start_ms"] for t in turns if t["start_ms"] > page.evaluate(f"{AUDIO}.currentTime") * 1000 + 50)
    page.keyboard.press("]")
    playing_near(page, after / 1000)
    page.evaluate("document.activeElement.blur()")  # space on a focused button presses that button instead
    page.keyboard.press(" ")
    page.wait_for_function(f"{AUDIO}.paused")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"{AUDIO}.currentTime < {after / 1000 - 3}")
    assert not errors, errors


def test_a_search_hit_opens_the_call_playing_at_the_hit(browser: Any, recorded_call: Any) -> None:
    srv, _, _ = recorded_call
    query = {"speaker": "caller", "where": {"interrupted_other": True}}
    hits = httpx.post(srv.http + "/v1/search", json=query, headers={"Authorization": f"Bearer {API_KEY}"}).json()
    hit = hits["hits"][0]
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{srv.http}/?api_key={API_KEY}#/search?speaker=caller&interrupted_other=true")
    page.wait_for_selector(f".hit[data-turn-id='{hit['turn_id']}'] a.hit-link")
    page.click(f".hit[data-turn-id='{hit['turn_id']}'] a.hit-link")
    page.wait_for_selector("#call:not([hidden])")
    playing_near(page, hit["turn"]["start_ms"] / 1000)
    assert page.text_content("#detail h3") == f"caller turn {hit['turn_id']}"
