"""Bookkeeping of an established session: outstanding requests and the replay window.

:class:`RequestTable` hands out 6-bit rqSeqs (never two outstanding requests on one) and
matches answers on (NetFn | 1, cmd, rqSeq); :class:`ReplayWindow` accepts each inbound
session sequence number at most once, within a window behind the highest seen. Both are
used by ``ipmi.proto.session.ClientSession``; neither looks at bytes on the wire.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ipmi.errors import IpmiError

RQ_SEQ_MODULO = 64


@attrs.define
class Pending:
    netfn: int
    cmd: int
    rq_seq: int
    message: bytes  # the unsealed IPMI message, sealed again for each retransmission


class RequestTable:
    """Outstanding requests by request id (ids are never reused; rqSeqs wrap at 64)."""

    __slots__ = ("_next_request_id", "_pending", "_rq_seq")

    def __init__(self) -> None:
        self._pending: dict[int, Pending] = {}
        self._rq_seq = 0
        self._next_request_id = 1

    def __len__(self) -> int:
        return len(self._pending)

    def take_rq_seq(self) -> int:
        """The next rqSeq (also for the sessionless probe, which is not tracked here)."""
        self._rq_seq = (self._rq_seq + 1) % RQ_SEQ_MODULO
        return self._rq_seq

    def add(self, netfn: int, cmd: int, build: Callable[[int], bytes]) -> tuple[int, bytes]:
        """Track a new request: (request id, the message ``build(rq_seq)`` returned)."""
        rq_seq = self.take_rq_seq()
        if self._pending:
            in_use = {pending.rq_seq for pending in self._pending.values()}
            if len(in_use) >= RQ_SEQ_MODULO:
                raise IpmiError("64 requests outstanding: no free rqSeq")
            while rq_seq in in_use:
                rq_seq = self.take_rq_seq()
        message = build(rq_seq)
        request_id = self._next_request_id
        self._next_request_id += 1
        self._pending[request_id] = Pending(netfn, cmd, rq_seq, message)
        return request_id, message

    def get(self, request_id: int) -> Pending | None:
        return self._pending.get(request_id)

    def match(self, netfn: int, cmd: int, rq_seq: int) -> int | None:
        """The id of the request this answer is for (no longer outstanding), or None."""
        for request_id, pending in self._pending.items():
            if pending.rq_seq == rq_seq and pending.netfn | 1 == netfn and pending.cmd == cmd:
                self.forget(request_id)
                return request_id
        return None

    def forget(self, request_id: int) -> None:
        if self._pending.pop(request_id, None) is not None and not self._pending:
            self._pending.clear()  # frees the table the last deletion leaves behind

    def clear(self) -> None:
        self._pending.clear()


class ReplayWindow:
    """Sliding window over the BMC's session sequence numbers (``size`` 1..64)."""

    __slots__ = ("_highest", "_seen_mask", "_size")

    def __init__(self, size: int) -> None:
        if not 1 <= size <= 64:
            raise ValueError("replay window must be 1..64")
        self._size = size
        self._highest: int | None = None
        self._seen_mask = 0

    def accept(self, sequence: int) -> bool:
        """True the first time ``sequence`` is seen within the window, else False."""
        highest = self._highest
        if highest is None or sequence > highest:
            shift = sequence - highest if highest is not None else self._size
            if shift >= self._size:
                self._seen_mask = 1
            else:
                self._seen_mask = ((self._seen_mask << shift) | 1) & ((1 << self._size) - 1)
            self._highest = sequence
            return True
        behind = highest - sequence
        if behind >= self._size or self._seen_mask >> behind & 1:
            return False
        self._seen_mask |= 1 << behind
        return True
