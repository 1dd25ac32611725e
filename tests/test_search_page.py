"""The dashboard's search page in real headless Chromium against a real server: three real calls streamed
and indexed, then filters, sequences, grouping, the click-through to a call's replay, the address bar
and errors, each checked against the API's own answer to the same query. Saves docs/screenshots/search.png.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from api.simulate import load_jsonl, with_fresh_sids
from tests.support import API_KEY, REPO, Server, stream_calls, wait_searchable
from tests.test_dashboard import accessibility

pytestmark = pytest.mark.integration

SPEED = 10.0
SHOTS = Path(os.environ.get("MISE_SCREENSHOTS", REPO / "docs" / "screenshots"))
CUSTOMERS = ["Contoso Internet", "Fabrikam Bank", "Tailspin Air"]
# The synthetic dialogue: 10 turns, the agent's turns 2 and 6 cut off by the caller's barge-ins (turns 3, 7).
SEQUENCE = {
    "sequence": [
        {"speaker": "agent", "where": {"interrupted_by_other": True}},
        {"speaker": "caller", "where": {"interrupted_other": True}, "within_turns": 1, "within_s": 5},
    ],
    "group_by": "call",
}
# Every hit on the page, per call section: [call_sid, [[call_sid, turn_id] per hit of each result]].
PAGE_RESULTS = """() => [...document.querySelectorAll('#results .rcall')].map(s => [s.dataset.callSid,
  [...s.querySelectorAll('.hits > li')].map(li => [...li.querySelectorAll('.hit')]
    .map(h => [h.dataset.callSid, Number(h.dataset.turnId)]))])"""


@pytest.fixture(scope="module")
def indexed(
    ray_address: str, tmp_path_factory: pytest.TempPathFactory, synthetic_capture: Path
) -> Iterator[tuple[Server, list[str]]]:
    """A server (with the emotion model, so turns have frustration) and three calls, streamed together and
    searchable: every stored turn of each is in the index."""
    calls = [with_fresh_sids(load_jsonl(synthetic_capture), api_key=API_KEY) for _ in CUSTOMERS]
    for messages, customer in zip(calls, CUSTOMERS, strict=True):
        messages[1]["start"]["customParameters"]["customer"] = customer
    sids = [messages[1]["start"]["callSid"] for messages in calls]
    with Server.start(ray_address, tmp_path_factory.mktemp("search-page"), MISE_EMOTION="1") as srv:
        stream_calls(srv, calls, SPEED)
        for sid in sids:
            assert len(wait_searchable(srv, sid)) == 10
        yield srv, sids


def post(srv: Server, query: dict[str, Any]) -> httpx.Response:
    return httpx.post(srv.http + "/v1/search", json=query, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)


def open_page(browser: Any, srv: Server, hash_: str, errors: list[str]) -> Any:
    """A new page (a browser context of its own) on the search page at ``hash_``, once it has its answer;
    script errors go to ``errors``."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{srv.http}/?api_key={API_KEY}{hash_}")
    page.wait_for_selector("#search:not([hidden])")
    page.wait_for_function("window.miseSearches > 0")
    assert "api_key" not in page.url
    return page


def submit(page: Any, button: str = "#s-turns button[type=submit]") -> None:
    """Submit the form and wait for the page to have the answer (results or an error)."""
    done = page.evaluate("window.miseSearches")
    page.click(button)
    page.wait_for_function(f"window.miseSearches > {done}")


def by_call(hits: list[dict[str, Any]]) -> list[list[Any]]:
    """The API's hits as the page shows them: per call, in order of first appearance."""
    out: dict[str, list[Any]] = {}
    for h in hits:
        out.setdefault(h["call_sid"], []).append([[h["call_sid"], h["turn_id"]]])
    return [[sid, items] for sid, items in out.items()]


def hash_params(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).fragment.partition("?")[2])


def test_filters_text_and_errors(browser: Any, indexed: tuple[Server, list[str]]) -> None:
    srv, sids = indexed
    errors: list[str] = []
    page = open_page(browser, srv, "#/search", errors)
    assert page.get_attribute("#nav-search", "aria-current") == "page"

    # Words and a minimum frustration: the turns have no transcript yet, so nothing matches, and the
    # page says so (and why), as the API does.
    page.fill("#s-q", "refund")
    page.fill("#s-min-frustration", "0.1")
    submit(page)
    assert hash_params(page) == {"q": ["refund"], "min_frustration": ["0.1"]}
    api = srv.get("/v1/search", q="refund", min_frustration="0.1").json()
    assert api["total"] == 0 and api["hits"] == []
    assert page.inner_text("#search-summary") == "0 matching turns"
    assert "transcript" in page.inner_text("#results .no-results")
    assert page.locator("#results .hit").count() == 0

    # Filters only: the caller's turns at or above 0.1 frustration, per call, as the API answers them.
    page.fill("#s-q", "")
    page.select_option("#s-speaker", "caller")
    submit(page)
    assert hash_params(page) == {"speaker": ["caller"], "min_frustration": ["0.1"]}
    api = srv.get("/v1/search", speaker="caller", min_frustration="0.1", explain="true").json()
    assert api["total"] > 0
    assert page.inner_text("#search-summary") == f"{api['total']} matching turn{'s' if api['total'] != 1 else ''}"
    assert page.evaluate(PAGE_RESULTS) == by_call(api["hits"])
    assert {sid for sid, _ in page.evaluate(PAGE_RESULTS)} <= set(sids)
    for section in page.locator("#results .rcall").all():  # a call's section holds that call's hits only
        sid = section.get_attribute("data-call-sid")
        assert {h.get_attribute("data-call-sid") for h in section.locator(".hit").all()} == {sid}
    first = api["hits"][0]
    shown = page.locator(f"#results .hit[data-hit-id='{first['id']}']")
    assert shown.locator(".explain li").all_inner_texts() == first["explain"]  # the conditions it met
    assert "speaker = caller" in first["explain"]
    assert shown.locator(".said").count() == 0  # no transcript (yet): no text line

    # More results: pages of 10 through next_cursor, appended under their calls.
    page.fill("#s-min-frustration", "")
    page.select_option("#s-limit", "10")
    submit(page)
    everything = srv.get("/v1/search", speaker="caller", limit="50").json()
    assert everything["total"] == 15 > 10
    assert page.inner_text("#search-summary") == "15 matching turns · showing 10"
    done = page.evaluate("window.miseSearches")
    page.click("#search-more")
    page.wait_for_function(f"window.miseSearches > {done}")
    assert page.evaluate(PAGE_RESULTS) == by_call(everything["hits"])
    assert page.inner_text("#search-summary") == "15 matching turns"
    assert page.is_hidden("#search-more")

    # A query the API refuses: its message next to the form; the page keeps working.
    done = page.evaluate("window.miseSearches")
    page.goto(f"{srv.http}/#/search?min_frustr=0.5")
    page.wait_for_function(f"window.miseSearches > {done}")
    refused = srv.get("/v1/search", min_frustr="0.5")
    assert refused.status_code == 400
    assert page.is_visible("#search-error")
    assert page.inner_text("#search-error") == "The search could not run: " + refused.json()["error"]
    assert "min_frustr=0.5" in page.inner_text("#s-extra")  # kept from the address, shown, droppable
    page.click("#s-extra button")
    submit(page)
    assert page.is_hidden("#search-error")
    assert page.inner_text("#search-summary") == f"{srv.get('/v1/search').json()['total']} matching turns · showing 20"

    # Highlights are split on their marks into text and <mark>: a turn's text is never parsed as HTML. (The
    # stored turns have no words yet, so this answer is the API's own hit with words put in.)
    said = 'I want a refund <img src=x onerror="window.pwned=1"> <b>now</b>'
    marked = said.replace("refund", "<em>refund</em>")
    fake = {**first, "highlight": marked, "turn": {**first["turn"], "text": said}}
    page.route(
        lambda url: "q=refund" in url and "/v1/search" in url,
        lambda route: route.fulfill(json={"total": 1, "hits": [fake], "next_cursor": None}),
    )
    page.fill("#s-q", "refund")
    submit(page)
    assert page.locator("#results .hit .said mark").all_inner_texts() == ["refund"]
    assert page.locator("#results .hit .said").inner_text() == said
    assert page.locator("#results img, #results b").count() == 0
    assert page.evaluate("window.pwned") is None
    page.unroute_all()
    accessibility(page)
    assert errors == []
    page.close()


def test_sequence_groups_click_through_and_address(browser: Any, indexed: tuple[Server, list[str]]) -> None:
    srv, sids = indexed
    SHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    page = open_page(browser, srv, "#/search", errors)

    # Build the sequence: an agent turn cut off by the caller, then the caller's barge-in within 1 turn
    # and 5 s. A third step is added and removed again; grouped by call.
    page.check("#s-mode-sequence")
    page.wait_for_selector("#s-step2-speaker")
    page.click("#s-add-step")
    assert page.locator("#s-steps > li").count() == 3
    page.click("button[aria-label='Remove step 3']")
    assert page.locator("#s-steps > li").count() == 2
    page.select_option("#s-step1-speaker", "agent")
    page.select_option("#s-step1-c1-field", "interrupted_by_other")
    page.select_option("#s-step1-c1-value", "true")
    page.select_option("#s-step2-speaker", "caller")
    page.select_option("#s-step2-c1-field", "interrupted_other")
    page.select_option("#s-step2-c1-value", "true")
    page.fill("#s-step2-within-turns", "1")
    page.fill("#s-step2-within-s", "5")
    page.check("#s-group")
    submit(page, "#s-sequence button[type=submit]")

    # The address holds the query as JSON: exactly the sequence built, and the API's answer to it is shown.
    in_address = json.loads(unquote(urlsplit(page.url).fragment.partition("?json=")[2]))
    assert in_address == SEQUENCE
    api = post(srv, {**SEQUENCE, "explain": True}).json()
    assert api["total_calls"] == 3
    expected = [
        [g["call_sid"], [[[h["call_sid"], h["turn_id"]] for h in s["hits"]] for s in g["sequences"]]]
        for g in api["groups"]
    ]
    assert page.evaluate(PAGE_RESULTS) == expected
    assert sorted(sid for sid, _ in expected) == sorted(sids)
    for _, sequences in expected:  # the two barge-ins of each call, each after the turn it cut off
        assert [[turn for _, turn in s] for s in sequences] == [[2, 3], [6, 7]]
    assert page.inner_text("#search-summary") == "3 calls have the sequence"
    assert {page.inner_text(f".rcall[data-call-sid='{sid}'] h2") for sid in sids} == set(CUSTOMERS)
    assert page.is_disabled("#s-sort")  # groups and sequences sort by time
    accessibility(page)
    page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / "search.png"))

    # A click on a hit opens the call's replay at that turn: selected, focused, its details shown.
    sid, barge_in = expected[0][0], 3
    page.click(f".rcall[data-call-sid='{sid}'] .hit[data-turn-id='{barge_in}'] .explain")
    page.wait_for_selector("#call:not([hidden])")
    assert urlsplit(page.url).fragment == f"/call/{sid}?turn={barge_in}"
    selected = f"#timeline .turn[data-turn-id='{barge_in}'][aria-pressed='true']"
    page.wait_for_selector(selected)
    page.wait_for_function(f'document.activeElement === document.querySelector("{selected}")')
    assert page.inner_text("#detail h3") == f"caller turn {barge_in}"
    assert page.locator("#timeline .turn").count() == 10

    # Back to the results (kept, the hit focused again); Enter on another hit opens that one.
    page.click("#call-back-link")
    page.wait_for_selector("#search:not([hidden])")
    assert json.loads(unquote(urlsplit(page.url).fragment.partition("?json=")[2])) == SEQUENCE
    assert page.evaluate("document.activeElement.closest('.hit').dataset.turnId") == str(barge_in)
    other = expected[1][0]
    page.focus(f".rcall[data-call-sid='{other}'] .hit[data-turn-id='6'] a.hit-link")
    page.keyboard.press("Enter")
    page.wait_for_selector("#timeline .turn[data-turn-id='6'][aria-pressed='true']")
    assert urlsplit(page.url).fragment == f"/call/{other}?turn=6"
    assert page.inner_text("#detail h3") == "agent turn 6"

    # The shared address: another browser on it (with its own key) rebuilds the form and the same results;
    # so does a reload.
    page.go_back()
    page.wait_for_selector("#search:not([hidden])")
    fragment = urlsplit(page.url).fragment
    again = open_page(browser, srv, "#" + fragment, errors)
    assert urlsplit(again.url).fragment == fragment
    assert again.is_checked("#s-mode-sequence") and again.is_checked("#s-group")
    assert [again.input_value(f"#s-step{n}-speaker") for n in (1, 2)] == ["agent", "caller"]
    assert again.input_value("#s-step1-c1-field") == "interrupted_by_other"
    assert again.input_value("#s-step2-c1-field") == "interrupted_other"
    assert [again.input_value("#s-step2-within-turns"), again.input_value("#s-step2-within-s")] == ["1", "5"]
    assert again.evaluate(PAGE_RESULTS) == expected
    again.reload()
    again.wait_for_function("window.miseSearches > 0")
    assert again.evaluate(PAGE_RESULTS) == expected

    # A step with no condition: the API's 400 is shown next to the form, the builder stays as it was.
    again.select_option("#s-step2-c1-field", "")
    again.select_option("#s-step2-speaker", "")
    submit(again, "#s-sequence button[type=submit]")
    broken = json.loads(unquote(urlsplit(again.url).fragment.partition("?json=")[2]))
    refused = post(srv, broken)
    assert refused.status_code == 400
    assert again.inner_text("#search-error") == "The search could not run: " + refused.json()["error"]
    assert again.locator("#s-steps > li").count() == 2
    again.close()
    assert errors == []
    page.close()
