"""The query model alone: parsing, validation messages, text syntax, highlights, sequence joins."""

from __future__ import annotations

import pytest

from api.search import query_from_params
from engine.search import text as T
from engine.search.query import Equals, QueryError, Range, Step, parse_query
from engine.search.sequence import join
from engine.store.index import Candidate


def test_a_full_query_parses_into_typed_parts() -> None:
    q = parse_query(
        {
            "text": 'cancel OR refund -thanks "my account" refun* cancel NEAR/3 account',
            "where": {"speaker": "caller", "frustration": {"gte": 0.7}, "features.pitch_z": {"gt": 3}},
            "last_s": 60,
            "aggs": {"by_emotion": {"terms": "emotion"}},
        }
    )
    f = q.filter
    assert Equals("speaker", ("caller",)) in f.conditions
    assert Range("frustration", gte=0.7) in f.conditions
    assert Range("pitch_z", gt=3.0) in f.conditions  # alias resolved
    assert Range("ms_to_end", lte=60000) in f.conditions
    assert f.text is not None
    assert [len(g) for g in f.text.groups] == [2, 1, 1, 1]
    assert f.text.excluded == (T.Phrase(("thanks",)),)
    assert q.sort.key == "_score"  # text: relevance by default


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"where": {"frustr": 1}}, "where.frustr: unknown field (did you mean 'frustration'?)"),
        ({"where": {"frustration": "high"}}, "where.frustration: expected a number, got 'high'"),
        ({"where": {"frustration": {"gte": 0.9, "lte": 0.1}}}, "where.frustration: the range is empty"),
        ({"where": {"speaker": {"gte": 1}}}, "where.speaker: keyword fields take a value"),
        ({"where": {"interrupted_other": "yes"}}, "where.interrupted_other: expected true or false"),
        ({"text": '"cancel my'}, "text: unclosed quote"),
        ({"text": "cancel OR"}, "text: OR needs a word or phrase on each side"),
        ({"text": "a*"}, "text: 'a*': a prefix needs at least 2 letters"),
        ({"text": "cancel NEAR account"}, "text: 'NEAR': write NEAR/N"),
        ({"text": "no NEAR/2 no"}, "text: NEAR/N joins two different words"),
        ({"sequence": [{"speaker": "agent"}] * 5}, "sequence: expected a list of 2 to 4 steps"),
        ({"sequence": [{"speaker": "agent"}, {}]}, "sequence[1]: a step needs at least one condition"),
        ({"limit": 100000}, "limit: 100000 is out of range (0 to 200)"),
        ({"sort": "pitch"}, "sort: unknown field 'pitch'"),
        ({"cursor": "nope"}, "cursor: not a cursor of this API"),
        ({"aggs": {"a": {"terms": "frustration"}}}, "aggs.a.terms: 'frustration' is numeric"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"where": {"call.started_at": {"gte": "yesterday"}}}, "is not an ISO 8601 time"),
    ],
)
def test_bad_queries_name_the_problem(query: dict[str, object], message: str) -> None:
    with pytest.raises(QueryError) as err:
        parse_query(query)
    assert message in str(err.value)


def test_text_matching_and_highlights_follow_index_tokens() -> None:
    q = T.parse_text('cancel -thanks "my account" refun*')
    assert T.matches(q, "I want to CANCEL my account, refunds too")
    assert not T.matches(q, "cancel my account, refunds, thanks")  # excluded word
    assert not T.matches(q, "cancel the account refunds")  # phrase broken
    assert (
        T.highlight(q, "Cancel my account; refunds") == "<em>Cancel</em> <em>my</em> <em>account</em>; <em>refunds</em>"
    )
    words = [  # a turn's words: its text is them joined by spaces (engine/transcript.py)
        {"word": w, "start_ms": 1000 + 400 * i, "end_ms": 1300 + 400 * i, "confidence": 0.9}
        for i, w in enumerate(["Cancel", "my", "account;", "refunds", "too."])
    ]
    assert T.spoken(q, words) == [
        {"word": w, "start_ms": 1000 + 400 * i, "end_ms": 1300 + 400 * i}
        for i, w in enumerate(["Cancel", "my", "account;", "refunds"])
    ]
    assert T.spoken(T.parse_text("too"), words) == [{"word": "too.", "start_ms": 2600, "end_ms": 2900}]
    assert T.spoken(q, None) == [] and T.spoken(T.parse_text("nothing"), words) == []
    near = T.parse_text("cancel NEAR/2 account")
    assert not T.matches(near, "account I want to cancel")  # 3 words between
    assert T.matches(near, "account to cancel")  # either order
    is_near = T.matches(near, "cancel this old account")
    assert is_near and not T.matches(near, "cancel this very old account")
    assert T.tokens("Don't café") == ["don", "t", "cafe"]


def _cand(call: str, i: int, start: int, end: int, started: int = 0) -> Candidate:
    return (call, i, start, end, started)


def test_sequence_join_takes_each_first_steps_earliest_chain_within_bounds() -> None:
    steps = (Step(parse_query({}).filter), Step(parse_query({}).filter, within_turns=2, within_ms=None))
    a = [_cand("CA1", 1, 0, 1000), _cand("CA1", 5, 9000, 9500), _cand("CA2", 0, 0, 500, started=10)]
    b = [
        _cand("CA1", 2, 1200, 1500),
        _cand("CA1", 3, 2000, 2500),
        _cand("CA1", 8, 9600, 9900),
        _cand("CA2", 3, 900, 950, 10),
    ]
    matches = join(steps, [a, b])
    # CA2 starts later (newest call first); its step 2 is 3 turns on: out of range. CA1#5 -> #8 also too far.
    assert [(m[0][0], m[0][1], m[1][1]) for m in matches] == [("CA1", 1, 2)]
    timed = (steps[0], Step(steps[0].filter, within_turns=None, within_ms=600))
    # by time only: CA2#0 -> #3 starts 400 ms after #0 ended; CA1#1 -> #2 (200 ms); CA1#5 -> #8 (100 ms)
    assert [(m[0][0], m[0][1], m[1][1]) for m in join(timed, [a, b])] == [
        ("CA2", 0, 3),
        ("CA1", 1, 2),
        ("CA1", 5, 8),
    ]


def test_get_parameters_map_onto_the_query_model() -> None:
    raw = query_from_params(
        {"q": "cancel", "speaker": "caller", "min_frustration": "0.7", "max_gap_before_ms": "4000", "last_s": "60"}
    )
    assert raw == {
        "text": "cancel",
        "last_s": 60.0,
        "where": {"speaker": "caller", "frustration": {"gte": 0.7}, "gap_before_ms": {"lte": 4000.0}},
    }
    with pytest.raises(QueryError, match="min_pitch: unknown numeric field"):
        query_from_params({"min_pitch": "1"})
    with pytest.raises(QueryError, match="limit: expected a whole number"):
        query_from_params({"limit": "lots"})


def test_the_published_schema_is_generated_and_every_example_follows_it_and_parses() -> None:
    import jsonschema
    import orjson

    from engine.search.schema import schema
    from tests.support import REPO

    published = orjson.loads((REPO / "docs" / "search.schema.json").read_bytes())
    assert published == schema(), "regenerate: python -m engine.search.schema > docs/search.schema.json"
    validator = jsonschema.Draft202012Validator(published)
    examples = orjson.loads((REPO / "docs" / "search.examples.json").read_bytes())
    assert len(examples) >= 8
    for example in examples:
        validator.validate(example["query"])
        parse_query(example["query"])
    assert not validator.is_valid({"where": {"frustr": 1}})  # the schema knows the fields too
