"""The message format of the publish→subscribe benchmark, shared by the
publisher (:mod:`infrafabric.bench.bus`) and the subscriber process
(:mod:`infrafabric.bench._subscriber`)."""

from __future__ import annotations

__all__ = ["PAYLOAD_SIZE", "encode", "parse"]

PAYLOAD_SIZE = 64


def encode(seq: int, sent_ns: int) -> bytes:
    """The message body: ``SEQ SENT_NS `` padded to PAYLOAD_SIZE bytes."""
    head = f"{seq} {sent_ns} ".encode()
    return head + b"x" * max(0, PAYLOAD_SIZE - len(head))


def parse(data: bytes) -> tuple[int, int]:
    """(seq, sent_ns) from a message body written by :func:`encode`."""
    seq, sent, _ = data.split(b" ", 2)
    return int(seq), int(sent)
