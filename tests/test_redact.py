"""Redaction of card numbers, security codes and national IDs, written or spoken (engine/redact.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.redact import CARD, NATIONAL_ID, SECURITY_CODE, Token, apply, find, luhn, redact_text

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def test_written_and_spoken_card_numbers_are_replaced() -> None:
    assert redact_text("my card is 4111 1111 1111 1111 thanks")[0] == "my card is [card number] thanks"
    assert redact_text("it's 4111-1111-1111-1111.")[0] == "it's [card number]"
    spoken = "sure it's four one one one one one one one one one one one one one one one okay"
    assert redact_text(spoken)[0] == "sure it's [card number] okay"
    doubled = "double five double five five five five five five five five five four four four four"
    assert luhn("5555555555554444") and redact_text(doubled)[0] == "[card number]"


def test_numbers_that_are_not_cards_stay() -> None:
    for text in (
        "the order 12345678 shipped",
        "call me on 020 7946 0018 please",
        "it costs 49 dollars and 99 cents at 3 pm",
        "oh I see, one moment",
    ):
        assert redact_text(text) == (text, []), text


def test_a_card_number_the_recogniser_misheard_is_redacted_all_the_same() -> None:
    # 16 digits failing Luhn (one misheard), and Whisper's way of writing a read-out number in pieces
    assert redact_text("the order 4111 1111 1111 1112 shipped")[0] == "the order [card number] shipped"
    assert redact_text("It's 45 3 .1 48 .0343646 7.")[0] == "It's [card number]"
    # After a prompt for a card, a shorter run too (a card number cut short, or split by a misheard word)
    text = redact_text("my card number is 4539 1488 for 0343")[0]  # the rest, 4 digits after it: as a code
    assert text == "my card number is [card number] for [security code]"
    assert redact_text("the long number is four five three nine one")[0] == "the long number is [card number]"
    assert redact_text("my card expires in 2027")[0] == "my card expires in 2027"  # 4 digits: a year


def test_security_codes_after_a_prompt_or_a_card_number() -> None:
    text, found = redact_text("and the security code on the back is 737 thank you")
    assert text == "and the security code on the back is [security code] thank you"
    assert [r.kind for r in found] == [SECURITY_CODE]
    text, _ = redact_text("card 4111 1111 1111 1111 expiring soon and then seven three seven")
    assert text == "card [card number] expiring soon and then [security code]"
    assert redact_text("we flew on a 737 yesterday")[0] == "we flew on a 737 yesterday"


def test_national_ids() -> None:
    assert redact_text("my ssn is 123-45-6789")[0] == "my ssn is [national id]"
    spoken = "my social security number is one two three four five six seven eight nine"
    assert redact_text(spoken)[0] == "my social security number is [national id]"
    assert redact_text("reference 123456789 please")[0] == "reference 123456789 please"  # no prompt
    assert redact_text("ssn 000-12-3456 is not valid")[0] == "ssn 000-12-3456 is not valid"
    assert redact_text("NI number AB 12 34 56 C ok")[0] == "NI number [national id] ok"


def test_spans_carry_the_words_times() -> None:
    words = ["the", "card", "is", "four", *["one"] * 15]
    tokens = [Token(w, 1000 + 300 * i, 1000 + 300 * i + 250) for i, w in enumerate(words)]
    found = find(tokens)
    assert [(r.kind, r.start_ms, r.end_ms) for r in found] == [(CARD, 1900, 1900 + 300 * 15 + 250)]
    out = apply(tokens, found)
    assert [t.text for t in out] == ["the", "card", "is", "[card number]"]
    assert (out[-1].start_ms, out[-1].end_ms) == (1900, 6650)
    assert NATIONAL_ID != CARD


@given(st.lists(st.integers(0, 9), min_size=15, max_size=15), st.booleans())
def test_any_luhn_valid_16_digit_card_is_redacted_written_or_spoken(body: list[int], spoken: bool) -> None:
    check = next(d for d in range(10) if luhn("".join(map(str, body)) + str(d)))
    digits = "".join(map(str, body)) + str(check)
    said = " ".join(WORDS[int(d)] for d in digits) if spoken else " ".join(digits[i : i + 4] for i in range(0, 16, 4))
    text, found = redact_text(f"the number is {said} right")
    assert text == "the number is [card number] right" and [r.kind for r in found] == [CARD]


@given(st.lists(st.sampled_from(["hello", "I", "want", "to", "cancel", "my", "account", "please", "oh"]), max_size=30))
def test_text_without_numbers_is_untouched(words: list[str]) -> None:
    text = " ".join(words)
    assert redact_text(text) == (text, [])


def test_a_turns_fields_are_redacted_with_times_and_confidences() -> None:
    from engine.asr import Word
    from engine.transcript import fields

    said = ["my", "card", "is", "4111", "1111", "1111", "1111"]
    words = [Word(w, 100 * i, 100 * i + 80, 0.5 if w.isdigit() else 0.9) for i, w in enumerate(said)]
    got = fields(words, start_ms=1000, source="asr")
    assert got["text"] == "my card is [card number]"
    assert got["words"][-1] == {"word": "[card number]", "start_ms": 1300, "end_ms": 1680, "confidence": 0.5}
    assert got["words"][0] == {"word": "my", "start_ms": 1000, "end_ms": 1080, "confidence": 0.9}
    assert got["redactions"] == [{"kind": CARD, "start_ms": 1300, "end_ms": 1680}]
