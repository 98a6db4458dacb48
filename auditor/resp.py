"""resp: the RESP stage, bytes -> frames, one decoder per direction of a connection.

Input: the ordered bytes of one direction (from ``stream``) and the gaps in
them. Output: ``Request`` (to_server) or ``Reply`` (to_client) frames, plus
``ParseError`` for bytes that are not RESP and ``Gap`` for bytes that were
not captured, in wire order (DESIGN.md §2).

- ``RequestDecoder`` / ``ReplyDecoder``: incremental, ``feed(data, ts_ns)``,
  ``gap(nbytes, ts_ns)``, ``finish(ts_ns)``, ``buffered``; memory bounded by
  the limits in ``auditor.limits`` (payloads stream, never buffered whole).
- ``parse_request`` / ``parse_reply``: the stateless contract,
  ``(State.OK | NEED_MORE | INVALID, frame, consumed)``; NEED_MORE consumes 0.

Implementation: ``resp_request`` (multibulk + inline, as redis-server parses
them) and ``resp_reply`` (RESP2 + RESP3, explicit stack).
"""

from auditor.resp_reply import ReplyDecoder, parse_reply
from auditor.resp_request import RequestDecoder, State, parse_ll, parse_request, split_inline

__all__ = [
    "ReplyDecoder",
    "RequestDecoder",
    "State",
    "parse_ll",
    "parse_reply",
    "parse_request",
    "split_inline",
]
