"""The in-process fair store (`queueing._ranked.Fair`) against a plain model of the
contract's order (`brokers/_contract.py`, "Fair share": start-time fair queuing over
flows (tenant, priority), V per priority, ties by the order tags were set), over random
runs of what the engine does to it: submits, due retries (to the back, or ahead), takes,
outcomes, hand-backs by crashed workers, cancels while waiting; with and without
weights (the store keeps flows in two FIFOs per priority while every weight is 1, and
in a heap once a tenant of another weight comes), and with `tenant_concurrency`.

The model scans every flow at each take (no heap, no buckets, no records kept between
tasks): what it says is the contract, plainly."""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from queueing._ranked import Fair
from queueing._task import Task, TaskState
from queueing.brokers._contract import QueueInfo

TENANTS: list[str | None] = [None, "a", "b", "c", "d", "e"]
LEVELS = [0, 0, 5]


class Flow:
    def __init__(self, start: float, seq: int) -> None:
        self.tasks: deque[Task] = deque()
        self.ahead: deque[Task] = deque()
        self.start = start
        self.seq = seq

    def __len__(self) -> int:
        return len(self.tasks) + len(self.ahead)


class Model:
    """The contract's order, plainly: a flow exists while it holds tasks (those cancelled
    while they wait too, until a take reaches them: they are dropped then, and are not a
    turn); the next task is the head of the flow of the highest priority, then the lowest
    S, then the tag set first, among tenants below `cap`; a task handed back goes first
    in its priority (if that is at least the next flow's)."""

    def __init__(self, cap: int | None, weights: dict[str, float] | None) -> None:
        self.cap = cap
        self.weights = weights or {}
        self.flows: dict[tuple[str | None, int], Flow] = {}
        self.vtime: dict[int, float] = {}
        self.seq = 0
        self.running: dict[str | None, int] = {}
        self.first: dict[int, deque[Task]] = {}

    def _tag(self) -> int:
        self.seq += 1
        return self.seq

    def full(self, tenant: str | None) -> bool:
        return self.cap is not None and self.running.get(tenant, 0) >= self.cap

    def flow(self, tenant: str | None, level: int) -> Flow:
        flow = self.flows.get((tenant, level))
        if flow is None:
            flow = self.flows[tenant, level] = Flow(self.vtime.get(level, 0.0), self._tag())
        return flow

    def push(self, task: Task, tenant: str | None, level: int, ahead: bool) -> None:
        flow = self.flow(tenant, level)
        (flow.ahead if ahead else flow.tasks).append(task)

    def push_first(self, task: Task, tenant: str | None, level: int) -> None:
        self.done(tenant)
        self.first.setdefault(level, deque()).append(task)

    def done(self, tenant: str | None) -> None:
        was = self.full(tenant)
        self.running[tenant] -= 1
        if was and not self.full(tenant):  # back, with S = max(S, V)
            for (name, level), flow in self.flows.items():
                if name == tenant:
                    flow.start = max(flow.start, self.vtime.get(level, 0.0))
                    flow.seq = self._tag()

    def _next(self) -> tuple[tuple[str | None, int], Flow] | None:
        ready = [item for item in self.flows.items() if not self.full(item[0][0])]
        if not ready:
            return None
        return min(ready, key=lambda item: (-item[0][1], item[1].start, item[1].seq))

    def pop(self, tenant_of: dict[Task, tuple[str | None, int]]) -> Task | None:
        while True:  # a task cancelled while it waited is dropped, not a turn: look again
            if any(self.first.values()):
                best = self._next()
                floor = best[0][1] if best is not None else 0
                for level in sorted(self.first, reverse=True):
                    handed = self.first[level]
                    while level >= floor and handed:
                        task = handed.popleft()
                        if task.state is not TaskState.PENDING:
                            continue
                        tenant = tenant_of[task][0]
                        if self.full(tenant):
                            self.flow(tenant, level).ahead.appendleft(task)
                            continue
                        self.running[tenant] = self.running.get(tenant, 0) + 1
                        return task
            best = self._next()
            if best is None:
                return None
            (tenant, level), flow = best
            task = flow.ahead.popleft() if flow.ahead else flow.tasks.popleft()
            pending = task.state is TaskState.PENDING
            if pending:
                self.vtime[level] = flow.start
                weight = self.weights.get(tenant, 1) if tenant is not None else 1
                flow.start += 1 / weight
                flow.seq = self._tag()
                self.running[tenant] = self.running.get(tenant, 0) + 1
            if not flow:
                del self.flows[tenant, level]
            if pending:
                return task

    def counts(self) -> tuple[int, int]:
        """(tasks waiting, those that may be taken now), cancelled ones included."""
        firsts = sum(len(handed) for handed in self.first.values())
        ready = sum(len(flow) for (tenant, _), flow in self.flows.items() if not self.full(tenant))
        return sum(len(flow) for flow in self.flows.values()) + firsts, ready + firsts


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, len(TENANTS) - 1), st.sampled_from(LEVELS)),
        st.tuples(st.just("pop"), st.integers(1, 3)),
        st.tuples(st.just("done"), st.integers(0, 99)),
        st.tuples(st.just("retry"), st.integers(0, 99), st.booleans()),
        st.tuples(st.just("hand back"), st.integers(0, 99)),
        st.tuples(st.just("cancel"), st.integers(0, 99)),
    ),
    max_size=120,
)
weightings = st.sampled_from([None, {"a": 1.0, "e": 1}, {"b": 2.0, "c": 0.5}, {"d": 3.0}])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, st.sampled_from([None, 1, 2]), weightings)
# A cancelled task dropped at a higher priority, then a task handed back below it: the
# take after the drop must see the handed-back one (hypothesis found it).
@example([("push", 0, 0), ("pop", 1), ("push", 0, 5), ("hand back", 0), ("cancel", 0)], None, None)
@example(
    [("push", 0, 0), ("pop", 1), ("push", 1, 5), ("hand back", 0), ("cancel", 0)],
    None,
    {"a": 2.0},
)
def test_the_store_takes_tasks_in_the_contracts_order(
    ops: list[tuple[Any, ...]], cap: int | None, weights: dict[str, float] | None
) -> None:
    weight_of = None if weights is None else (lambda name: weights.get(name, 1))
    info = QueueInfo("q", 1000, 1 << 20, 60.0, tenant_concurrency=cap, weight_of=weight_of)
    store = Fair(info)
    model = Model(cap, weights)
    of: dict[Task, tuple[str | None, int]] = {}
    running: list[Task] = []
    waiting: list[Task] = []

    def new_task(tenant: str | None, level: int) -> Task:
        task = Task(f"q:{len(of)}", "q", len(of), 0.0)
        if tenant is not None:
            task.tenant = tenant
        if level:
            task.priority = level
        of[task] = (tenant, level)
        return task

    for op in ops:
        kind = op[0]
        if kind == "push":
            tenant, level = TENANTS[op[1]], op[2]
            task = new_task(tenant, level)
            store.push(task)
            model.push(task, tenant, level, ahead=False)
            waiting.append(task)
        elif kind == "pop":
            for _ in range(op[1]):
                expected = model.pop(of)
                try:
                    taken: Task | None = store.pop()
                except IndexError:
                    taken = None
                assert taken is expected, f"took {taken}, the contract says {expected}"
                if taken is None:
                    break
                waiting.remove(taken)
                running.append(taken)
        elif running and kind in ("done", "retry", "hand back"):
            task = running.pop(op[1] % len(running))
            tenant, level = of[task]
            if kind == "hand back":  # its worker crashed: first in its priority
                store.push_first(task)
                model.push_first(task, tenant, level)
                waiting.append(task)
                continue
            store.done(task)
            model.done(tenant)
            if kind == "retry":  # failed, and due again at once: a new attempt waits
                if op[2]:
                    store.push_retry(task)
                else:
                    store.push(task)
                model.push(task, tenant, level, ahead=op[2])
                waiting.append(task)
        elif waiting and kind == "cancel":
            task = waiting.pop(op[1] % len(waiting))
            task.state = TaskState.CANCELLED
        assert (store.waiting, store.count) == model.counts()
    for task in running:
        store.done(task)
        model.done(of[task][0])
    while True:  # and the rest, to the end
        expected = model.pop(of)
        try:
            taken = store.pop()
        except IndexError:
            taken = None
        assert taken is expected
        if taken is None:
            break
        store.done(taken)
        model.done(of[taken][0])
    assert (store.waiting, store.count) == model.counts() == (0, 0)
    assert not store.tenants  # nothing waits, nothing runs: no tenant is kept
