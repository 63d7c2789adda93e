"""A claim whose answer comes late (held up by a network cut or a stall of this process)
may hand out tasks that Redis has since given to another process, once their lease ran
out there: such a claim renews its tasks before handing them out, and keeps only those
still its own. The same fault with worker processes: the chaos suite's silent link."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from broker_helpers import JOBS, claim_until, new_task, opened

pytestmark = pytest.mark.redis

LEASE = 0.5


async def test_a_claim_answered_after_another_process_took_its_tasks_hands_out_none(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(redis_url, lease=LEASE) as late, opened(redis_url, lease=LEASE) as other:
        tasks = [new_task(payload=n) for n in range(4)]
        assert await late.accept_many(JOBS, tasks) == 4
        claim = late._consumer.claim

        async def held_up(*args: Any) -> Any:
            got = await claim(*args)  # Redis handed them to `late`; the answer is held up
            taken = await claim_until(other, n=10)  # ...past the lease: `other` takes them
            assert sorted(t.id for t in taken) == sorted(t.id for t in got) != []
            return got

        monkeypatch.setattr(late._consumer, "claim", held_up)
        assert await late.claim(JOBS, 4, wait=0) == []


async def test_a_late_claim_keeps_and_renews_what_is_still_its_own(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(redis_url, lease=LEASE) as late, opened(redis_url, lease=LEASE) as other:
        tasks = [new_task(payload=n) for n in range(4)]
        assert await late.accept_many(JOBS, tasks) == 4
        claim = late._consumer.claim

        async def held_up(*args: Any) -> Any:
            got = await claim(*args)
            await trio.sleep(LEASE * 0.8)  # late, but nobody took them (yet)
            return got

        monkeypatch.setattr(late._consumer, "claim", held_up)
        got = await late.claim(JOBS, 4, wait=0)
        assert sorted(t.payload for t in got) == [0, 1, 2, 3]
        # Renewed when handed out: not idle for a lease, so not another's to take.
        await trio.sleep(LEASE * 0.5)
        assert await other.claim(JOBS, 4, wait=0) == []
