"""Task priorities in process: the waiting tasks of a queue that uses them, by priority.

A queue starts without one: its ready tasks go straight to its buffer (an `actors.Mailbox`,
FIFO), the fastest path. The first task submitted to it with a priority above the lowest
switches the queue over for the rest of the system's life: its waiting tasks (those in the
buffer too, in order) move to a `Ranked` store, one FIFO per priority level, and the
dispatcher hands its workers the highest-priority task each time one asks for work
(`Mailbox.wait_for_demand`: the pull model is unchanged, no busy worker holds a task).

A queue with `retry_ahead` switches the same way at its first due retry, to a
`RetriesAhead` store: one more FIFO per level, of due retries, read before the level's
new tasks.

The first task submitted with a tenant (`submit(tenant=)`) switches the queue, the same
way, to a `Fair` store (from the buffer or from its `Ranked` store, in order), which
shares the waiting tasks of each priority out between tenants (and caps each tenant's
running tasks with `tenant_concurrency`).
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from typing import TYPE_CHECKING

import trio

from ._task import MAX_PRIORITY, MIN_PRIORITY, Task, TaskState, priority_of

if TYPE_CHECKING:
    from actors import Mailbox

    from ._runtime import QueueRuntime
    from .brokers._contract import QueueInfo

log = logging.getLogger("queueing")
_PENDING = TaskState.PENDING

_LEVELS = MAX_PRIORITY - MIN_PRIORITY + 1


class Ranked:
    """Waiting tasks by priority: the highest level first, FIFO within a level."""

    __slots__ = ("_arrived", "count", "levels")

    def __init__(self) -> None:
        self.levels: list[deque[Task]] = [deque() for _ in range(_LEVELS)]
        self.count = 0
        self._arrived = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return self.count

    def push(self, task: Task) -> None:
        """Queue a task behind those of its priority."""
        self.levels[priority_of(task) - MIN_PRIORITY].append(task)
        self.count += 1
        if self._arrived:
            self._arrived.unpark_all()

    def push_first(self, task: Task) -> None:
        """Queue a task ahead of those of its priority (a task handed back by a worker)."""
        self.levels[priority_of(task) - MIN_PRIORITY].appendleft(task)
        self.count += 1
        if self._arrived:
            self._arrived.unpark_all()

    def pop(self) -> Task:
        """The next task to run: the oldest of the highest level that has one."""
        for level in reversed(self.levels):
            if level:
                self.count -= 1
                return level.popleft()
        raise IndexError("no task waits")

    def take_from(self, buffer: Mailbox) -> None:
        """Move the tasks waiting in `buffer` here, in their order (at the switch)."""
        while True:
            try:
                task = buffer.get_nowait()
            except trio.WouldBlock:
                return
            self.push(task)


class RetriesAhead(Ranked):
    """`Ranked`, with due retries ahead of the new tasks of their level (`retry_ahead`):
    per level, a task handed back by a crashed worker first, then retries in the order
    they became due, then the tasks never tried, in their order."""

    __slots__ = ("retries",)

    def __init__(self) -> None:
        super().__init__()
        self.retries: list[deque[Task]] = [deque() for _ in range(_LEVELS)]

    def push_retry(self, task: Task) -> None:
        """Queue a due retry behind the retries of its priority, ahead of its new tasks."""
        self.retries[priority_of(task) - MIN_PRIORITY].append(task)
        self.count += 1
        if self._arrived:
            self._arrived.unpark_all()

    def push_first(self, task: Task) -> None:
        self.retries[priority_of(task) - MIN_PRIORITY].appendleft(task)
        self.count += 1
        if self._arrived:
            self._arrived.unpark_all()

    def pop(self) -> Task:
        for level in range(_LEVELS - 1, -1, -1):
            retries = self.retries[level]
            if retries:
                self.count -= 1
                return retries.popleft()
            waiting = self.levels[level]
            if waiting:
                self.count -= 1
                return waiting.popleft()
        raise IndexError("no task waits")


class _Tenant:
    """One tenant of a fair queue: its flows (by priority), its running tasks, its step."""

    __slots__ = ("flows", "full", "last", "name", "running", "step")

    def __init__(self, name: str | None, step: float) -> None:
        self.name = name
        self.step = step  # 1 / weight: how far its start tag moves per task taken
        #: Its flows, by level; one that ran dry stays while the tenant has tasks running
        #: or waiting (its next task starts it again, without a new record).
        self.flows: dict[int, _Flow] = {}
        self.last: _Flow | None = None  # the flow its last task joined
        self.running = 0  # taken (handed to a worker) and without an outcome or a retry
        self.full = False  # at `tenant_concurrency`: its flows are set aside


class _Flow:
    """The waiting tasks of one tenant at one priority, FIFO (due retries with
    `retry_ahead` in `ahead`, read first), with the flow's start tag `start`. `seq` is -1
    while it has no place in the order (set aside, or dry); else, with the heap, it names
    its entry there (the order its tag was set). `entries`: its entries in the buckets
    (the last is its place; earlier ones are stale)."""

    __slots__ = ("ahead", "entries", "level", "seq", "start", "tasks", "tenant")

    def __init__(self, tenant: _Tenant, level: int, start: float) -> None:
        self.tenant = tenant
        self.level = level
        self.start = start
        self.seq = -1
        self.entries = 0
        self.tasks: deque[Task] = deque()
        self.ahead: deque[Task] | None = None

    def __len__(self) -> int:
        ahead = self.ahead
        return len(self.tasks) + (len(ahead) if ahead else 0)


class Fair(Ranked):
    """Waiting tasks shared out fairly between tenants (`submit(tenant=)`): start-time fair
    queuing over flows, exactly as `brokers/_contract.py`'s "Fair share" says. A flow is
    the waiting tasks of one tenant at one priority; the next task is the head of the flow
    with the highest priority, then the lowest start tag, then the one whose tag was set
    first.

    While every tenant weighs 1 (no `tenant_weights`, or only weights of 1 so far), every
    tag of a priority is V or V + 1 (a flow starts at V, and the one taken, at V, moves
    to V + 1): two FIFOs of flows per priority, `now` (tag V) and `later` (V + 1), each in
    the order the tags were set, and taking a task costs the same with 10 or 10,000
    tenants waiting. The first tenant of another weight turns them into a heap of flows
    keyed (-priority, tag, order the tag was set), for good: logarithmic in the flows.

    It also counts each tenant's tasks taken and not yet settled, retried or handed back
    (`done`), and sets a tenant at `tenant_concurrency` aside until one of them is.
    """

    __slots__ = (
        "cap",
        "even",
        "first",
        "firsts",
        "heap",
        "high",
        "later",
        "now",
        "out",
        "retry_ahead",
        "seq",
        "tenants",
        "vtime",
        "waiting",
        "weight_of",
    )

    def __init__(self, info: QueueInfo, arrived: trio.lowlevel.ParkingLot | None = None) -> None:
        super().__init__()
        if arrived is not None:
            self._arrived = arrived  # the feed of the store it replaces parks there
        self.cap = info.tenant_concurrency
        self.weight_of = info.weight_of
        self.retry_ahead = info.retry_ahead
        #: Every step so far is 1: the flows wait in `now` and `later`, else in `heap`.
        self.even = True
        #: Per priority, the flows with tag V, then those with tag V + 1, in tag order.
        self.now: list[deque[_Flow]] = [deque() for _ in range(_LEVELS)]
        self.later: list[deque[_Flow]] = [deque() for _ in range(_LEVELS)]
        self.high = -1  # no level above it has a flow in `now` or `later`
        #: Without `even`: flows that have a task to take: (-priority, start tag, seq, flow).
        self.heap: list[tuple[int, float, int, _Flow]] = []
        self.vtime = [0.0] * _LEVELS  # V, per priority
        self.tenants: dict[str | None, _Tenant] = {}
        #: Per priority, tasks handed back by a crashed worker: they go first.
        self.first: list[deque[Task]] = [deque() for _ in range(_LEVELS)]
        self.firsts = 0
        self.out: dict[Task, _Tenant] = {}  # taken and not yet done
        self.seq = 0
        #: Every task waiting here (`count`: those that may be taken now).
        self.waiting = 0

    def __len__(self) -> int:
        return self.waiting

    # -- in ----------------------------------------------------------------------------------

    def _tenant(self, name: str | None) -> _Tenant:
        tenant = self.tenants.get(name)
        if tenant is None:
            step = 1.0
            if self.weight_of is not None and name is not None:
                try:
                    step = 1.0 / self.weight_of(name)
                except Exception as exc:  # the user's function: log, and weigh it 1
                    log.warning("tenant %r: its weight is taken as 1: %s", name, exc)
            if step != 1.0 and self.even:
                self._to_heap()
            tenant = self.tenants[name] = _Tenant(name, step)
        return tenant

    def _flow(self, task: Task) -> _Flow:
        tenant = self._tenant(getattr(task, "tenant", None))
        level = getattr(task, "priority", MIN_PRIORITY) - MIN_PRIORITY
        flow = tenant.last
        if flow is None or flow.level != level:
            flow = tenant.flows.get(level)
            if flow is None:
                flow = tenant.flows[level] = _Flow(tenant, level, 0.0)
            tenant.last = flow
        if flow.seq < 0 and not flow.tasks and not flow.ahead:
            flow.start = self.vtime[level]  # new, or dry: it starts at S = V
            if not tenant.full:
                self._schedule(flow)
        return flow

    def _schedule(self, flow: _Flow) -> None:
        """Give a flow its place in the order, after every tag set before."""
        level = flow.level
        if self.even:
            flow.seq = 0
            flow.entries += 1
            if flow.start <= self.vtime[level]:
                self.now[level].append(flow)
            else:
                self.later[level].append(flow)
            if level > self.high:
                self.high = level
            return
        self.seq += 1
        flow.seq = self.seq
        heapq.heappush(self.heap, (-level, flow.start, self.seq, flow))

    def _to_heap(self) -> None:
        """From `now` and `later` to the heap, in the same order (a tenant of another
        weight came: tags leave the grid)."""
        self.even = False
        for level in range(_LEVELS):
            for bucket in (self.now[level], self.later[level]):
                for flow in bucket:
                    flow.entries -= 1
                    if not flow.entries and flow.seq >= 0:  # its last entry: its place
                        self.seq += 1
                        flow.seq = self.seq
                        self.heap.append((-level, flow.start, self.seq, flow))
                bucket.clear()
        heapq.heapify(self.heap)
        self.high = -1

    def _added(self, flow: _Flow) -> None:
        self.waiting += 1
        if flow.seq >= 0:
            self.count += 1
            if self._arrived:
                self._arrived.unpark_all()

    def push(self, task: Task) -> None:
        """Queue a task at the back of its flow."""
        flow = self._flow(task)
        flow.tasks.append(task)
        self._added(flow)

    def push_retry(self, task: Task) -> None:
        """Queue a due retry (`retry_ahead`) at the front of its flow, behind the flow's
        earlier due retries."""
        flow = self._flow(task)
        if flow.ahead is None:
            flow.ahead = deque()
        flow.ahead.append(task)
        self._added(flow)

    def push_first(self, task: Task) -> None:
        """Queue a task handed back by a crashed worker: it goes first in its priority."""
        self.done(task)
        self.first[priority_of(task) - MIN_PRIORITY].append(task)
        self.firsts += 1
        self.waiting += 1
        self.count += 1
        if self._arrived:
            self._arrived.unpark_all()

    # -- out ---------------------------------------------------------------------------------

    def pop(self) -> Task:
        """The next task to run (see the class doc); tasks cancelled while they waited
        are dropped on the way."""
        while True:
            if self.firsts:
                handed = self._pop_first()
                if handed is not None:
                    return handed
            task = self._pop_even() if self.even else self._pop_heap()
            if task is not None:
                return task
            # A task cancelled while it waited was dropped, and tasks handed back wait: the
            # next flow may now be of a lower priority than one of them, so look again.

    def _pop_heap(self) -> Task | None:
        """`pop` from `heap`; None: a cancelled task was dropped while `first` holds some."""
        heap = self.heap
        while heap:
            _, start, seq, flow = heap[0]
            if flow.seq != seq:
                heapq.heappop(heap)  # set aside since (its tenant reached its limit)
                continue
            ahead = flow.ahead
            task = ahead.popleft() if ahead else flow.tasks.popleft()
            self.waiting -= 1
            self.count -= 1
            tenant = flow.tenant
            level = flow.level
            if task.state is _PENDING:
                self.vtime[level] = start
                flow.start = start + tenant.step
                self._taken(task, tenant)  # which may set the flow aside
            if not flow.tasks and not flow.ahead:
                heapq.heappop(heap)
                self._dry(flow)
            elif task.state is not _PENDING:
                pass  # cancelled while it waited: not a turn; the flow stays
            elif flow.seq == seq:
                self.seq += 1
                flow.seq = self.seq
                heapq.heapreplace(heap, (-level, flow.start, self.seq, flow))
            else:
                heapq.heappop(heap)  # set aside
            if task.state is _PENDING:
                return task
            if self.firsts:
                return None
        raise IndexError("no task may be taken")

    def _pop_even(self) -> Task | None:
        """`pop` from `now` and `later`; None: a cancelled task was dropped while `first`
        holds some."""
        nows = self.now
        while True:
            level = self.high
            bucket = nows[level] if level >= 0 else None
            if not bucket and level >= 0 and self.later[level]:
                # Every flow's tag is V + 1: the one taken makes it V.
                laters = self.later
                nows[level], laters[level] = laters[level], nows[level]
                bucket = nows[level]
            if bucket:
                flow = bucket[0]
            if not bucket or flow.entries != 1 or flow.seq < 0:
                level = self._level()  # (drops stale entries in front)
                if level < 0:
                    raise IndexError("no task may be taken")
                bucket = nows[level]
                if not bucket:  # every flow's tag is V + 1: the one taken makes it V
                    laters = self.later
                    nows[level], laters[level] = laters[level], bucket
                    bucket = nows[level]
                flow = bucket[0]
            ahead = flow.ahead
            task = ahead.popleft() if ahead else flow.tasks.popleft()
            self.waiting -= 1
            self.count -= 1
            pending = task.state is _PENDING
            if pending:
                start = flow.start
                self.vtime[level] = start
                flow.start = start + 1.0
                self._taken(task, flow.tenant)  # which may set the flow aside
            if not flow.tasks and not flow.ahead:
                bucket.popleft()
                flow.entries -= 1
                self._dry(flow)
            elif not pending:
                pass  # cancelled while it waited: not a turn; the flow stays
            elif flow.seq >= 0:
                bucket.popleft()
                self.later[level].append(flow)  # tag V + 1, set last
            else:
                bucket.popleft()  # set aside
                flow.entries -= 1
            if pending:
                return task
            if self.firsts:
                return None

    def _level(self) -> int:
        """The highest level that has a flow in the order, with its first entry its
        place (stale entries in front are dropped); -1 if there is none."""
        level = self.high
        while level >= 0:
            for bucket in (self.now[level], self.later[level]):
                while bucket:
                    flow = bucket[0]
                    if flow.entries == 1 and flow.seq >= 0:
                        return level
                    bucket.popleft()  # stale: set aside, or placed again further back
                    flow.entries -= 1
            level -= 1
            self.high = level
        return -1

    def _dry(self, flow: _Flow) -> None:
        """A flow ran out of tasks: it leaves the order (a task later starts it again, at
        S = V); its record stays while its tenant has tasks running."""
        flow.seq = -1
        tenant = flow.tenant
        if not tenant.running:
            self._idle(tenant)

    def _idle(self, tenant: _Tenant) -> None:
        """Forget a tenant without running tasks if it has none waiting either."""
        for flow in tenant.flows.values():
            if flow.tasks or flow.ahead:
                return
        del self.tenants[tenant.name]

    def _pop_first(self) -> Task | None:
        """A task handed back, of the highest priority that has one, if that is at least
        the priority of the next flow's task."""
        if self.even:
            floor = max(self._level(), 0)
        else:
            heap = self.heap
            while heap and heap[0][3].seq != heap[0][2]:
                heapq.heappop(heap)
            floor = -heap[0][0] if heap else 0
        for level in range(_LEVELS - 1, floor - 1, -1):
            handed = self.first[level]
            while handed:
                task = handed.popleft()
                self.firsts -= 1
                self.waiting -= 1
                self.count -= 1
                if task.state is not _PENDING:
                    continue
                tenant = self._tenant(getattr(task, "tenant", None))
                if tenant.full:  # at its limit: first in its flow, which is set aside
                    flow = self._flow(task)
                    if flow.ahead is None:
                        flow.ahead = deque()
                    flow.ahead.appendleft(task)
                    self.waiting += 1
                    continue
                self._taken(task, tenant)
                return task
        return None

    def _taken(self, task: Task, tenant: _Tenant) -> None:
        tenant.running += 1
        self.out[task] = tenant
        cap = self.cap
        if cap is not None and tenant.running >= cap and not tenant.full:
            tenant.full = True  # set its flows aside (their places go stale)
            for flow in tenant.flows.values():
                if flow.seq >= 0:
                    flow.seq = -1
                    self.count -= len(flow)

    def done(self, task: Task) -> None:
        """A task taken from here was settled, retried or handed back: its tenant's
        running count goes down, and a tenant set aside comes back, with S = max(S, V)."""
        tenant = self.out.pop(task, None)
        if tenant is None:
            return
        tenant.running -= 1
        if tenant.full and tenant.running < (self.cap or 0):
            tenant.full = False
            vtime = self.vtime
            for flow in tenant.flows.values():
                if flow.tasks or flow.ahead:
                    flow.start = max(flow.start, vtime[flow.level])
                    self._schedule(flow)
                    self.count += len(flow)
            if self.count and self._arrived:
                self._arrived.unpark_all()
        if not tenant.running:
            self._idle(tenant)

    def figures(self, limit: int) -> list[tuple[str | None, int, int]]:
        """The tenants with the most tasks waiting (then running): (tenant, waiting,
        running), at most `limit` (for `queueing status`; costs a pass over the tenants)."""
        rows = [
            (tenant.name, sum(len(flow) for flow in tenant.flows.values()), tenant.running)
            for tenant in self.tenants.values()
        ]
        for task in (task for handed in self.first for task in handed):
            if task.state is _PENDING:
                rows.append((getattr(task, "tenant", None), 1, 0))
        merged: dict[str | None, list[int]] = {}
        for name, waiting, running in rows:
            row = merged.setdefault(name, [0, 0])
            row[0] += waiting
            row[1] += running
        ranked = sorted(merged.items(), key=lambda item: (-item[1][0], -item[1][1], item[0] or ""))
        return [(name, waiting, running) for name, (waiting, running) in ranked[:limit]]

    def take_store(self, store: Ranked) -> None:
        """Move the tasks waiting in a `Ranked` store here, in their order (at the switch):
        they are all of the default tenant."""
        retries = store.retries if isinstance(store, RetriesAhead) else None
        for level in range(_LEVELS):
            if retries is not None:
                for task in retries[level]:
                    self.push_retry(task)
            for task in store.levels[level]:
                self.push(task)


async def feed(rt: QueueRuntime) -> None:
    """Hand the waiting tasks of a queue's store (`rt.ranked`, read again each round: a
    switch to `Fair` replaces it) to the workers that ask for work, until cancelled (the
    dispatcher runs this for a queue once it has a store)."""
    buffer = rt.buffer
    assert buffer is not None
    while True:
        await buffer.wait_for_demand()
        store = rt.ranked
        assert store is not None
        while not store.count:
            await store._arrived.park()
            store = rt.ranked
            assert store is not None
        for _ in range(min(buffer.demand, store.count)):
            try:
                task = store.pop()
            except IndexError:  # the rest was cancelled while it waited
                break
            buffer.put_nowait(task)
        # (`wait_for_demand` checkpoints: this loop yields once per round.)
