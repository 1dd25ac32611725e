"""Text search syntax over turn text: parse once, compile to FTS5 and OpenSearch, highlight in Python.

Syntax (a search box's, one line):
- ``refund`` a word; several words must all occur (AND);
- ``"cancel my account"`` an exact phrase;
- ``cancel OR refund`` either (``OR`` binds tighter than the implicit AND);
- ``-thanks`` must not occur (a word, phrase or prefix);
- ``refun*`` a prefix (at least 2 characters, one word);
- ``cancel NEAR/3 account`` two words with at most 3 words between them, in either order.

Words are tokenized as both indices tokenize text: runs of letters and digits, lower-cased, accents
removed (SQLite FTS5 ``unicode61 remove_diacritics 2``; OpenSearch: a pattern tokenizer on
non-alphanumerics + lowercase + asciifolding). A word that tokenizes into several (``don't``) is a
phrase. Highlights are computed here from the same tokens, so both backends highlight identically.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

MAX_TERMS = 32
MAX_TEXT_CHARS = 1000
MAX_NEAR = 50

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


class TextSyntaxError(ValueError):
    """The text query is malformed; the message says where and how."""


def normalize(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    """Index tokens of ``text``: alphanumeric runs, lower-cased, accents removed."""
    return [normalize(m.group()) for m in _TOKEN.finditer(text)]


def token_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, token) per token of ``text``, offsets into ``text``."""
    return [(m.start(), m.end(), normalize(m.group())) for m in _TOKEN.finditer(text)]


@dataclass(frozen=True, slots=True)
class Phrase:
    """One word (a phrase of one token) or consecutive words."""

    words: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Prefix:
    prefix: str


@dataclass(frozen=True, slots=True)
class Near:
    left: str
    right: str
    distance: int  # at most this many other tokens between them


Atom = Phrase | Prefix | Near


@dataclass(frozen=True, slots=True)
class TextQuery:
    """AND over ``groups`` (each an OR of atoms), and NOT any of ``excluded``."""

    groups: tuple[tuple[Atom, ...], ...]
    excluded: tuple[Atom, ...]
    source: str

    @property
    def positive(self) -> bool:
        return bool(self.groups)

    def atoms(self) -> list[Atom]:
        return [a for g in self.groups for a in g]


_LEX = re.compile(r'\s*(?:(-)?"([^"]*)("?)|(\S+))')
_NEAR = re.compile(r"NEAR/(\d+)$")


@dataclass(frozen=True, slots=True)
class _Term:
    negated: bool
    atom: Atom


@dataclass(frozen=True, slots=True)
class _NearOp:
    distance: int


_OR: Final = "OR"
_Item = _Term | _NearOp | str


def parse_text(source: str) -> TextQuery:
    if len(source) > MAX_TEXT_CHARS:
        raise TextSyntaxError(f"text is {len(source)} characters; at most {MAX_TEXT_CHARS}")
    items: list[_Item] = []
    pos = 0
    while pos < len(source):
        m = _LEX.match(source, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        if m.group(2) is not None or m.group(3) is not None:  # a quoted phrase
            if m.group(3) != '"':
                raise TextSyntaxError(f"unclosed quote at character {m.start(2) - 1}")
            words = tuple(tokens(m.group(2)))
            if not words:
                raise TextSyntaxError(f"empty phrase at character {m.start(2) - 1}")
            items.append(_Term(bool(m.group(1)), Phrase(words)))
            continue
        word = m.group(4)
        if word == "OR":
            items.append(_OR)
            continue
        near = _NEAR.match(word)
        if near:
            distance = int(near.group(1))
            if distance > MAX_NEAR:
                raise TextSyntaxError(f"NEAR/{distance}: at most NEAR/{MAX_NEAR}")
            items.append(_NearOp(distance))
            continue
        if word.startswith("NEAR"):
            raise TextSyntaxError(f"{word!r}: write NEAR/N with N the most words between, e.g. NEAR/3")
        if word in ("AND", "NOT"):
            raise TextSyntaxError(f"{word!r}: words are ANDed already; exclude with -word")
        if "(" in word or ")" in word:
            raise TextSyntaxError("parentheses are not supported: use OR between words, -word to exclude")
        negated = word.startswith("-")
        if negated:
            word = word[1:]
            if not word:
                raise TextSyntaxError("'-' must be followed by a word or phrase")
        items.append(_Term(negated, _word_atom(word)))
    return _assemble(items, source)


def _word_atom(word: str) -> Atom:
    if word.endswith("*"):
        stem = word.rstrip("*")
        parts = tokens(stem)
        if len(parts) != 1 or len(stem) != len(word) - 1 or normalize(stem) != parts[0]:
            raise TextSyntaxError(f"{word!r}: a prefix is one word followed by one *")
        if len(parts[0]) < 2:
            raise TextSyntaxError(f"{word!r}: a prefix needs at least 2 letters")
        return Prefix(parts[0])
    parts = tokens(word)
    if not parts:
        raise TextSyntaxError(f"{word!r} has no letters or digits to search for")
    return Phrase(tuple(parts))


def _assemble(items: list[_Item], source: str) -> TextQuery:
    groups: list[list[Atom]] = []
    excluded: list[Atom] = []
    i = 0
    pending_or = False
    while i < len(items):
        item = items[i]
        if item == _OR:
            if not groups or pending_or:
                raise TextSyntaxError("OR needs a word or phrase on each side")
            pending_or = True
            i += 1
            continue
        if not isinstance(item, _Term):
            raise TextSyntaxError("NEAR/N needs a word on each side")
        negated, atom = item.negated, item.atom
        following = items[i + 1] if i + 1 < len(items) else None
        if isinstance(following, _NearOp):  # `a NEAR/n b`: one atom of three items
            right = items[i + 2] if i + 2 < len(items) else None
            if not isinstance(right, _Term):
                raise TextSyntaxError("NEAR/N needs a word on each side")
            if negated or right.negated:
                raise TextSyntaxError("NEAR/N cannot be excluded; exclude single words or phrases")
            if not (isinstance(atom, Phrase) and len(atom.words) == 1) or not _single(right.atom):
                raise TextSyntaxError("NEAR/N joins two single words")
            assert isinstance(right.atom, Phrase)
            if atom.words == right.atom.words:  # FTS5 would let one occurrence match both ends
                raise TextSyntaxError("NEAR/N joins two different words")
            atom = Near(atom.words[0], right.atom.words[0], following.distance)
            i += 2
        i += 1
        if negated:
            if pending_or:
                raise TextSyntaxError("OR cannot join an excluded word")
            excluded.append(atom)
            continue
        if pending_or:
            groups[-1].append(atom)
            pending_or = False
        else:
            groups.append([atom])
    if pending_or:
        raise TextSyntaxError("OR needs a word or phrase on each side")
    if not groups and not excluded:
        raise TextSyntaxError("the text query has nothing to search for")
    count = sum(len(g) for g in groups) + len(excluded)
    if count > MAX_TERMS:
        raise TextSyntaxError(f"{count} terms; at most {MAX_TERMS}")
    return TextQuery(tuple(tuple(g) for g in groups), tuple(excluded), source)


def _single(atom: object) -> bool:
    return isinstance(atom, Phrase) and len(atom.words) == 1


# --- matching and highlights (pure; the same for every backend) -------------------------------


def _atom_spans(atom: Atom, toks: list[str]) -> list[tuple[int, int]]:
    """Token index ranges [i, j) where ``atom`` matches."""
    out: list[tuple[int, int]] = []
    if isinstance(atom, Phrase):
        n = len(atom.words)
        for i in range(len(toks) - n + 1):
            if tuple(toks[i : i + n]) == atom.words:
                out.append((i, i + n))
    elif isinstance(atom, Prefix):
        out = [(i, i + 1) for i, t in enumerate(toks) if t.startswith(atom.prefix)]
    else:
        lefts = [i for i, t in enumerate(toks) if t == atom.left]
        rights = [i for i, t in enumerate(toks) if t == atom.right]
        for i in lefts:
            for j in rights:
                if i != j and abs(i - j) - 1 <= atom.distance:
                    out += [(i, i + 1), (j, j + 1)]
    return out


def matches(query: TextQuery, text: str | None) -> bool:
    """Whether ``text`` satisfies ``query`` (as both indices decide it)."""
    toks = tokens(text or "")
    if any(_atom_spans(a, toks) for a in query.excluded):
        return False
    return all(any(_atom_spans(a, toks) for a in group) for group in query.groups)


def matched_terms(query: TextQuery, text: str | None) -> list[str]:
    """The positive atoms of ``query`` found in ``text``, as written in the query."""
    toks = tokens(text or "")
    return [describe(a) for a in query.atoms() if _atom_spans(a, toks)]


def describe(atom: Atom) -> str:
    if isinstance(atom, Phrase):
        return " ".join(atom.words) if len(atom.words) == 1 else '"' + " ".join(atom.words) + '"'
    if isinstance(atom, Prefix):
        return atom.prefix + "*"
    return f"{atom.left} NEAR/{atom.distance} {atom.right}"


def _marked(query: TextQuery, spans: list[tuple[int, int, str]]) -> list[int]:
    """Indices of the tokens that a positive atom of ``query`` matches."""
    toks = [t for _, _, t in spans]
    marked: set[int] = set()
    for atom in query.atoms():
        for i, j in _atom_spans(atom, toks):
            marked.update(range(i, j))
    return sorted(marked)


def highlight(query: TextQuery, text: str | None, *, pre: str = "<em>", post: str = "</em>") -> str | None:
    """``text`` with every token of a positive match wrapped in ``pre``/``post``; None if none matched.
    The text is not HTML-escaped: a page shows it with the marks split out (see the dashboard)."""
    spans = token_spans(text or "")
    marked = _marked(query, spans)
    if not text or not marked:
        return None
    out: list[str] = []
    last = 0
    for k in marked:
        start, end, _ = spans[k]
        out.append(text[last:start] + pre + text[start:end] + post)
        last = end
    out.append(text[last:])
    return "".join(out)


def spoken(query: TextQuery, words: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The turn's words (``{"word", "start_ms", "end_ms", ...}``, its text is them joined by spaces) that a
    positive atom of ``query`` matched, with their times: where in the call the hit was said."""
    if not words:
        return []
    text = " ".join(str(w.get("word", "")) for w in words)
    spans = token_spans(text)
    starts, at = [], 0
    for w in words:
        starts.append(at)
        at += len(str(w.get("word", ""))) + 1
    out: dict[int, dict[str, Any]] = {}
    for k in _marked(query, spans):
        i = bisect.bisect_right(starts, spans[k][0]) - 1
        w = words[i]
        out.setdefault(i, {"word": w.get("word"), "start_ms": w.get("start_ms"), "end_ms": w.get("end_ms")})
    return [out[i] for i in sorted(out)]
