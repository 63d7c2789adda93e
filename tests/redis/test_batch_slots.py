"""The client submit's slot, made without a class call, is the slot `_Slot` makes."""

from __future__ import annotations

from queueing.brokers._contract import QueueInfo
from queueing.brokers.redis._batch import _compact_slot, _Slot


def test_a_compact_slot_is_made_as_the_class_makes_it() -> None:
    queue = QueueInfo("job", maxsize=10, max_payload=1000, result_ttl=60.0)
    call = ("job:1", '{"v":1}', "{}")
    quick, general = _compact_slot(queue, call), _Slot(queue, [call], compact=True)
    for name in _Slot.__slots__:
        assert getattr(quick, name) == getattr(general, name), name
    assert quick.tasks is not general.tasks
