"""Sequences across turns: join each step's candidate turns within a call (pure, backend-independent).

A match is a chain of turns t1, t2, ... of one call, one per step, with turn_index strictly increasing;
each step's ``within_turns`` bounds t[i].turn_index - t[i-1].turn_index, and ``within_ms`` bounds
t[i].start_ms - t[i-1].end_ms. For every turn of step 1 that starts a chain, the match reported is
its earliest chain (smallest turn indices, step by step). Matches are ordered newest call first, then
call SID, then the first turn's index: the executor's time order.
Candidates are plain tuples (``engine.store.index.Candidate``: why there).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from operator import itemgetter

from engine.search.query import Step
from engine.store.index import CALL_SID, CALL_STARTED_MS, END_MS, START_MS, TURN_INDEX, Candidate

_KEY = itemgetter(CALL_SID, TURN_INDEX)


def _sorted(cands: Sequence[Candidate]) -> list[Candidate]:
    return sorted(cands, key=_KEY)  # by call, then turn (backends send them so: a linear pass)


class _Step:
    """One step's turns by call: rows sorted by (call_sid, turn_index), each call's slice of them."""

    __slots__ = ("indices", "rows", "spans")

    def __init__(self, rows: list[Candidate]) -> None:
        self.rows = rows
        self.indices = [r[TURN_INDEX] for r in rows]
        self.spans: dict[str, tuple[int, int]] = {}
        lo = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i][CALL_SID] != rows[lo][CALL_SID]:
                self.spans[rows[lo][CALL_SID]] = (lo, i)
                lo = i


def join(steps: Sequence[Step], candidates: Sequence[Sequence[Candidate]]) -> list[tuple[Candidate, ...]]:
    by_step = [_Step(_sorted(cands)) for cands in candidates]
    first = by_step[0]
    chains: list[tuple[Candidate, ...]] = []
    for call_sid in sorted(first.spans):
        if any(call_sid not in s.spans for s in by_step[1:]):
            continue
        lo, hi = first.spans[call_sid]
        for k in range(lo, hi):
            chain = _earliest_chain(steps, by_step, 1, (first.rows[k],))
            if chain is not None:
                chains.append(chain)
    chains.sort(key=_time_order)
    return chains


def _time_order(chain: tuple[Candidate, ...]) -> tuple[bool, int, str, int]:
    first = chain[0]
    started = first[CALL_STARTED_MS]
    return (started is None, -(started or 0), first[CALL_SID], first[TURN_INDEX])


def _earliest_chain(
    steps: Sequence[Step], by_step: list[_Step], i: int, chain: tuple[Candidate, ...]
) -> tuple[Candidate, ...] | None:
    if i == len(steps):
        return chain
    prev = chain[-1]
    step, turns = steps[i], by_step[i]
    lo, hi = turns.spans[prev[CALL_SID]]
    k = bisect.bisect_right(turns.indices, prev[TURN_INDEX], lo, hi)
    while k < hi:
        cand = turns.rows[k]
        if step.within_turns is not None and cand[TURN_INDEX] - prev[TURN_INDEX] > step.within_turns:
            break
        if step.within_ms is None or cand[START_MS] - prev[END_MS] <= step.within_ms:
            found = _earliest_chain(steps, by_step, i + 1, (*chain, cand))
            if found is not None:
                return found
        k += 1
    return None
