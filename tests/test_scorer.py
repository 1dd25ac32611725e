"""The emotion scorer actor batches the turns that arrive while its model runs, and it is bounded: past its queue
it sheds, and it never computes turns their hosts have given up on. Real Ray, the real model."""

from __future__ import annotations

from typing import Any

import pytest
import ray
import soundfile

from actors.scorer import SCORER_THREADS, EmotionScorer
from tests.support import data_path

pytestmark = pytest.mark.integration


def turns(n: int) -> list[Any]:
    x = soundfile.read(data_path("calls/synthetic_dialogue") / "inbound.wav", dtype="int16")[0]
    return [x[4000 * i : 4000 * i + 8000 * 6] for i in range(n)]  # 6 s each: two of the model's windows


def test_a_full_queue_sheds_requests_with_a_count(ray_address: str) -> None:
    scorer: Any = ray.remote(EmotionScorer).options(num_cpus=0, max_concurrency=SCORER_THREADS)
    scorer = scorer.remote(max_queued=2, max_batch=1)
    ray.get(scorer.ready.remote())
    results = ray.get([scorer.score.remote([turn]) for turn in turns(20)])
    scored = [r[0] for r in results if r[0] is not None]
    stats = ray.get(scorer.stats.remote())
    assert scored and stats["shed"] >= 1
    assert stats["items"] == len(scored) and stats["shed"] + len(scored) == 20  # every turn: scored or shed
    assert all(0.0 <= r["frustration"] <= 1.0 for r in scored)
    ray.kill(scorer)


def test_turns_older_than_their_hosts_wait_are_dropped_not_computed(ray_address: str) -> None:
    scorer: Any = ray.remote(EmotionScorer).options(num_cpus=0).remote(max_age_s=0.0)
    ray.get(scorer.ready.remote())
    assert ray.get(scorer.score.remote(turns(3))) == [None, None, None]
    stats = ray.get(scorer.stats.remote())
    assert stats["expired"] == 3 and stats["items"] == 0
    ray.kill(scorer)


def test_requests_that_arrive_while_the_model_runs_are_scored_as_one_batch(ray_address: str) -> None:
    scorer: Any = ray.remote(EmotionScorer).options(num_cpus=0, max_concurrency=SCORER_THREADS).remote()
    ray.get(scorer.ready.remote())
    alone = [ray.get(scorer.score.remote([turn]))[0] for turn in turns(12)]
    before = ray.get(scorer.stats.remote())
    together = [r[0] for r in ray.get([scorer.score.remote([turn]) for turn in turns(12)])]
    stats = ray.get(scorer.stats.remote())
    assert stats["items"] - before["items"] == 12 and stats["batches"] - before["batches"] < 12
    for a, b in zip(alone, together, strict=True):  # a turn scores the same in a batch as alone
        assert a is not None and b is not None
        assert a["logits"] == pytest.approx(b["logits"], abs=1e-4)
    ray.kill(scorer)
