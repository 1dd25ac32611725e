"""Sequences across turns: join each step's candidate turns within a call (pure, backend-independent).

A match is a chain of turns t1, t2, ... of one call, one per step, with turn_index strictly increasing;
each step's ``within_turns`` bounds t[i].turn_index - t[i-1].turn_index, and ``within_ms`` bounds
t[i].start_ms - t[i-1].end_ms. For every turn of step 1 that starts a chain, the match reported is
its earliest chain (smallest turn indices, step by step). Matches are ordered newest call first, then
call SID, then the first turn's index: the executor's time order.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence

from engine.search.query import Step
from engine.store.index import Candidate


def join(steps: Sequence[Step], candidates: Sequence[Sequence[Candidate]]) -> list[tuple[Candidate, ...]]:
    by_call: list[dict[str, list[Candidate]]] = []
    for cands in candidates:
        grouped: dict[str, list[Candidate]] = defaultdict(list)
        for c in cands:
            grouped[c.call_sid].append(c)
        for turns in grouped.values():
            turns.sort(key=lambda c: c.turn_index)
        by_call.append(grouped)
    matches: list[tuple[Candidate, ...]] = []
    for call_sid in sorted(by_call[0]):
        per_step = [grouped.get(call_sid, []) for grouped in by_call]
        if any(not turns for turns in per_step):
            continue
        indices = [[c.turn_index for c in turns] for turns in per_step]
        for first in per_step[0]:
            chain = _earliest_chain(steps, per_step, indices, 1, (first,))
            if chain is not None:
                matches.append(chain)
    matches.sort(
        key=lambda m: (m[0].call_started_ms is None, -(m[0].call_started_ms or 0), m[0].call_sid, m[0].turn_index)
    )
    return matches


def _earliest_chain(
    steps: Sequence[Step],
    per_step: list[list[Candidate]],
    indices: list[list[int]],
    i: int,
    chain: tuple[Candidate, ...],
) -> tuple[Candidate, ...] | None:
    if i == len(steps):
        return chain
    prev = chain[-1]
    step = steps[i]
    turns = per_step[i]
    k = bisect.bisect_right(indices[i], prev.turn_index)
    while k < len(turns):
        cand = turns[k]
        if step.within_turns is not None and cand.turn_index - prev.turn_index > step.within_turns:
            break
        if step.within_ms is None or cand.start_ms - prev.end_ms <= step.within_ms:
            found = _earliest_chain(steps, per_step, indices, i + 1, (*chain, cand))
            if found is not None:
                return found
        k += 1
    return None
