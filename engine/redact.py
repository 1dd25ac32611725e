"""Redaction of a turn's words: payment card numbers, security codes and national ID numbers.

Pure, no I/O. Contact centres must not store card numbers, and a transcript holds them as digits ("4111 1111
1111 1111") or as spoken words ("four one one one ..."), whichever the speech recogniser or the platform wrote.
So the words are read as a sequence of tokens, each worth some digits ("4111" -> 4111, "four" -> 4, "oh" -> 0
inside a run of digits, "double five" -> 55, "triple" likewise), and runs of digit tokens are checked:

- **card number**: 13 to 19 digits passing the Luhn check (the longest such stretch of a run); and, as a
  recogniser may mishear a digit or two of one, any run of 13 or more digits, and any run of 5 or more
  digits within a few words after a prompt for a card ("card number", "credit card", "the long number");
- **security code**: 3 or 4 digits within a few words after a prompt for one ("security code", "CVV", "the
  three digits on the back") or after a card number;
- **national ID**: a US social security number (9 digits in valid ranges) written 123-45-6789 or spoken within
  a few words of "social security" / "SSN", and a UK National Insurance number (AB 12 34 56 C).

Each found stretch of tokens is replaced by one tag (``[card number]``, ``[security code]``, ``[national id]``)
and reported as a ``Redaction`` with its time span when the tokens carry times, so recordings can be muted
over it later. Ordinary numbers (prices, times, a 10-digit phone number that fails Luhn) are left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

CARD: Final = "card number"
SECURITY_CODE: Final = "security code"
NATIONAL_ID: Final = "national id"
TAGS: Final = {CARD: "[card number]", SECURITY_CODE: "[security code]", NATIONAL_ID: "[national id]"}

_DIGIT_WORDS: Final = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_REPEATS: Final = {"double": 2, "triple": 3}
_CARD_PROMPT: Final = re.compile(r"\b(card|credit|debit|visa|mastercard|amex|long number)\b")
_CODE_PROMPT: Final = re.compile(r"\b(security code|cvv|cvc|cv2|verification (code|number)|digits on the back)\b")
_ID_PROMPT: Final = re.compile(r"\b(social security|ssn|social insurance)\b")
_SSN_WRITTEN: Final = re.compile(r"^\d{3}-\d{2}-\d{4}$")
_NINO: Final = re.compile(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b", re.IGNORECASE)
CODE_WINDOW: Final = 12  # tokens after a prompt (or a card number) in which 3-4 digits are a security code


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Redaction:
    kind: str
    first: int  # token indices, inclusive
    last: int
    start_ms: int | None
    end_ms: int | None


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(tokens: list[Token]) -> list[str | None]:
    """Per token, the digits it stands for ("" for a joiner such as "-" inside a run), or None."""
    out: list[str | None] = []
    repeat = 1
    for i, token in enumerate(tokens):
        word = token.text.lower().strip(".,;:!?()\"'")
        if word in _REPEATS and i + 1 < len(tokens):
            repeat = _REPEATS[word]
            out.append("")
            continue
        if word.replace("-", "").isdigit():
            value: str | None = word.replace("-", "")
        elif word in _DIGIT_WORDS and (word not in ("o", "oh") or _near_digits(tokens, i)):
            value = _DIGIT_WORDS[word] * repeat
        elif word in ("-", "dash"):
            value = ""
        else:
            value = None
        repeat = 1
        out.append(value)
    return out


def _near_digits(tokens: list[Token], i: int) -> bool:
    """ "oh" is a zero only between digits: "oh I see" is not."""

    def digit(j: int) -> bool:
        if not 0 <= j < len(tokens):
            return False
        w = tokens[j].text.lower().strip(".,;:!?")
        return w.isdigit() or (w in _DIGIT_WORDS and w not in ("o", "oh"))

    return digit(i - 1) or digit(i + 1)


def _runs(values: list[str | None]) -> list[tuple[int, int]]:
    """Maximal stretches of tokens that stand for digits (inclusive index pairs), with at least one digit."""
    runs, start = [], None
    for i, v in enumerate([*values, None]):
        if v is not None and start is None:
            start = i
        elif v is None and start is not None:
            if any(values[start:i]):
                runs.append((start, i - 1))
            start = None
    return runs


def find(tokens: list[Token]) -> list[Redaction]:
    """What to redact in ``tokens``, in order, not overlapping."""
    values = _digits(tokens)
    lowered = [t.text.lower() for t in tokens]
    found: list[Redaction] = []
    taken: set[int] = set()

    def add(kind: str, first: int, last: int) -> None:
        found.append(Redaction(kind, first, last, tokens[first].start_ms, tokens[last].end_ms))
        taken.update(range(first, last + 1))

    runs = _runs(values)
    for first, last in runs:  # card numbers: the longest Luhn-valid stretch of 13-19 digits
        best = None
        for a in range(first, last + 1):
            for b in range(last, a - 1, -1):
                digits = "".join(v or "" for v in values[a : b + 1])
                if 13 <= len(digits) <= 19 and luhn(digits) and (best is None or b - a > best[1] - best[0]):
                    best = (a, b)
                    break
        if best is not None:
            add(CARD, *best)
    for first, last in runs:  # what is most likely a card number, misheard: redacted all the same
        if first in taken or last in taken:
            continue
        count = sum(len(v or "") for v in values[first : last + 1])
        before = " ".join(lowered[max(0, first - CODE_WINDOW) : first])
        if count >= 13 or (count >= 5 and _CARD_PROMPT.search(before)):
            add(CARD, first, last)
    for first, last in runs:
        if first in taken or last in taken:
            continue
        digits = "".join(v or "" for v in values[first : last + 1])
        before = " ".join(lowered[max(0, first - CODE_WINDOW) : first])
        after_card = any(r.kind == CARD and 0 < first - r.last <= CODE_WINDOW for r in found)
        written = last == first and _SSN_WRITTEN.match(tokens[first].text.strip(".,;:!?"))
        if len(digits) == 9 and _valid_ssn(digits) and (written or _ID_PROMPT.search(before)):
            add(NATIONAL_ID, first, last)
        elif len(digits) in (3, 4) and (_CODE_PROMPT.search(before) or after_card):
            add(SECURITY_CODE, first, last)
    text = " ".join(t.text for t in tokens)
    for match in _NINO.finditer(text):
        first = text.count(" ", 0, match.start())
        last = text.count(" ", 0, match.end() - 1)
        if not taken & set(range(first, last + 1)):
            add(NATIONAL_ID, first, last)
    return sorted(found, key=lambda r: r.first)


def _valid_ssn(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def stretches(tokens: list[Token], found: list[Redaction]) -> list[tuple[Token, int, int]]:
    """The tokens after redaction, each with the range of original tokens it stands for (inclusive): a kept
    token stands for itself, a tag for its redacted stretch (and spans the stretch's times)."""
    out: list[tuple[Token, int, int]] = []
    by_first = {r.first: r for r in found}
    i = 0
    while i < len(tokens):
        r = by_first.get(i)
        if r is None:
            out.append((tokens[i], i, i))
            i += 1
        else:
            out.append((Token(TAGS[r.kind], r.start_ms, r.end_ms), r.first, r.last))
            i = r.last + 1
    return out


def apply(tokens: list[Token], found: list[Redaction]) -> list[Token]:
    """``tokens`` with each redacted stretch replaced by one token, its tag."""
    return [token for token, _, _ in stretches(tokens, found)]


def redact_text(text: str) -> tuple[str, list[Redaction]]:
    """Plain text (no word times): the redacted text and what was found (spans without times)."""
    tokens = [Token(w) for w in text.split()]
    found = find(tokens)
    return " ".join(t.text for t in apply(tokens, found)), found
