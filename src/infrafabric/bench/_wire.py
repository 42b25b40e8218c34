"""The message format of the delivery benchmarks, shared by the senders
(:mod:`infrafabric.bench.bus`, :mod:`infrafabric.bench.coordinator`) and the
subscriber process (:mod:`infrafabric.bench._subscriber`). The coordinator's
push carries it as the task's ``description``."""

from __future__ import annotations

__all__ = ["PAYLOAD_SIZE", "encode", "parse"]

PAYLOAD_SIZE = 64


def encode(seq: int, sent_ns: int, size: int = PAYLOAD_SIZE) -> bytes:
    """The message body: ``SEQ SENT_NS `` padded to ``size`` bytes."""
    head = f"{seq} {sent_ns} ".encode()
    return head + b"x" * max(0, size - len(head))


def parse(data: bytes) -> tuple[int, int]:
    """(seq, sent_ns) from a message body written by :func:`encode`."""
    seq, sent, _ = data.split(b" ", 2)
    return int(seq), int(sent)
