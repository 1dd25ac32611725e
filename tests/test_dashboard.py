"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright), against a
real server streaming real calls. Saves the README's screenshots (docs/screenshots/, or MISE_SCREENSHOTS).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import websockets

from api.simulate import load_jsonl, with_fresh_sids
from tests.support import (
    API_KEY,
    REPO,
    Server,
    SseReader,
    ended,
    free_port,
    send_paced,
)

pytestmark = pytest.mark.integration

SPEED = 10.0
SHOTS = Path(os.environ.get("MISE_SCREENSHOTS", REPO / "docs" / "screenshots"))


def play(server: Server, messages: list[dict[str, Any]], speed: float = SPEED) -> threading.Thread:
    """Stream a call in the background, as Twilio would; a server that goes away just ends it."""

    async def run() -> None:
        try:
            async with websockets.connect(server.ws) as ws:
                await send_paced(ws, messages, speed)
                await asyncio.wait_for(ws.wait_closed(), 30)
        except (OSError, websockets.ConnectionClosed):
            pass

    thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    thread.start()
    return thread


def test_live_monitor_call_view_replay_and_resume(
    browser: Any, ray_address: str, tmp_path: Path, synthetic_capture: Path
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    namespace, port = "ui" + secrets.token_hex(3), free_port()
    calls = [with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY) for _ in range(3)]
    for i, messages in enumerate(calls):
        messages[1]["start"]["customParameters"]["customer"] = ["Contoso Internet", "Fabrikam Bank", "Tailspin Air"][i]
    sid = calls[0][1]["start"]["callSid"]
    srv = Server.launch(ray_address, tmp_path, namespace=namespace, port=port)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{srv.http}/?api_key={API_KEY}")
        page.wait_for_selector("#monitor:not([hidden])")
        assert "api_key" not in page.url, "the key is taken out of the address bar"
        reference = SseReader(srv.http + "/v1/events", until=ended(sid))  # when each event was emitted
        assert reference.connected.wait(10)
        threads = [play(srv, messages) for messages in calls]

        # The live monitor lists the three calls while they stream.
        page.wait_for_function("document.querySelectorAll('#live-rows tr').length === 3", timeout=20_000)
        talking = "[...document.querySelectorAll('#live-rows tr')].every(tr => Number(tr.children[4].textContent) >= 2)"
        page.wait_for_function(talking, timeout=20_000)
        page.screenshot(path=str(SHOTS / "live-monitor.png"))

        # The first call's live view: turns land in their speaker's lane within 1 s of their emission
        # (those that end after the view opened; earlier ones arrive with the view's replay).
        page.click(f"#live-rows tr[data-call-sid='{sid}'] a")
        page.wait_for_selector("#call:not([hidden])")
        page.wait_for_function("document.querySelector('#conn').textContent === 'live'")
        opened = time.time()
        for t in threads:
            t.join(60)
        events = reference.wait()
        page.wait_for_function("document.querySelectorAll('#timeline .turn').length === 10", timeout=20_000)
        shown = page.eval_on_selector_all(
            "#timeline .turn",
            "els => els.map(b => [Number(b.dataset.turnId), b.dataset.speaker, b.parentElement.dataset.speaker,"
            " Number(b.dataset.added) / 1000])",
        )
        turns = {e.data["turn_id"]: e for e in events if e.event == "turn.ended" and e.data["call_sid"] == sid}
        assert sorted(t[0] for t in shown) == sorted(turns)
        timed = 0
        for turn_id, speaker, lane, added in shown:
            assert speaker == lane == turns[turn_id].data["speaker"]
            if turns[turn_id].at > opened + 0.5:
                assert added - turns[turn_id].at <= 1.0, f"turn {turn_id} took {added - turns[turn_id].at:.2f} s"
                timed += 1
        assert timed >= 3, "too few turns ended while the view was open to time them"
        assert page.locator("#timeline .interruption").count() == 2  # the call's two barge-ins
        page.screenshot(path=str(SHOTS / "call-live.png"), full_page=True)

        # Replay of the finished call, from /v1/calls/{sid}/turns; a turn's features on click (and by keyboard).
        page.reload()
        page.wait_for_function("document.querySelectorAll('#timeline .turn').length === 10", timeout=20_000)
        assert page.locator("#timeline .interruption").count() == 2
        assert page.locator("#timeline .silence-band").count() >= 2  # the ~4 s of dead air, shaded in both lanes
        agitated = page.locator("#timeline .turn[data-turn-id='5']")
        agitated.focus()
        page.keyboard.press("Enter")
        page.wait_for_selector("#detail dl")
        assert "Hz" in page.inner_text("#detail")
        page.screenshot(path=str(SHOTS / "call-replay.png"), full_page=True)
        accessibility(page)

        # Resume: the monitor is open; a call is streaming; the server restarts mid-call (SIGTERM: the call
        # is finalized); the page reconnects by itself with Last-Event-ID and gets the rest once.
        page.goto(f"{srv.http}/#/")
        page.wait_for_selector("#monitor:not([hidden])")
        page.wait_for_function("document.querySelector('#conn').textContent === 'live'")
        last = with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY)
        last_sid = last[1]["start"]["callSid"]
        play(srv, last, speed=2.0)
        page.wait_for_function(
            f"(() => {{ const r = document.querySelector(\"#live-rows tr[data-call-sid='{last_sid}']\");"
            " return r && Number(r.children[4].textContent) >= 2; })()",
            timeout=30_000,
        )
        srv.process.terminate()
        srv.process.wait(30)
        srv = Server.launch(ray_address, tmp_path, namespace=namespace, port=port)
        page.wait_for_function(
            f"!document.querySelector(\"#live-rows tr[data-call-sid='{last_sid}']\")", timeout=30_000
        )
        received: list[str] = page.evaluate("window.miseReceived")
        assert len(received) == len(set(received)), "an event was delivered twice across the restart"
        final = srv.wait_call(last_sid)
        assert final["end_reason"] == "server_shutdown"
    finally:
        srv.stop()


def accessibility(page: Any) -> None:
    """Basic checks: every control has a name; text contrast >= 4.5:1 (WCAG AA); keyboard focus is visible."""
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('button, a, input, select, textarea')]
        .filter(el => el.offsetParent !== null)
        .filter(el => !(el.getAttribute('aria-label') || el.textContent.trim() ||
                        (el.id && document.querySelector(`label[for="${el.id}"]`))))
        .map(el => el.outerHTML.slice(0, 80))"""
    )
    assert unnamed == [], unnamed
    low = page.evaluate(CONTRAST_JS)
    assert low == [], low
    page.evaluate("document.activeElement && document.activeElement.blur()")
    focused = []
    for _ in range(4):
        page.keyboard.press("Tab")
        focused.append(
            page.evaluate(
                "(() => { const el = document.activeElement; const s = getComputedStyle(el);"
                " return [el.tagName, s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0]; })()"
            )
        )
    assert all(tag != "BODY" for tag, _ in focused), focused
    assert all(visible for _, visible in focused), f"focus not visible: {focused}"


# Text whose contrast with its nearest painted background is under 4.5:1 (WCAG 2 relative luminance).
CONTRAST_JS = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).slice(0, 4).map(Number);
  const channel = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    const hasText = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (el.offsetParent === null || !hasText) continue;
    const fg = lum(rgb(getComputedStyle(el).color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < 4.5) out.push(`${el.tagName}.${el.className} ${ratio.toFixed(2)}: ${el.textContent.slice(0, 30)}`);
  }
  return out;
}"""
