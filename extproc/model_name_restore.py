"""The reverse model rewrite: in a response, the served model's name goes back to the one the client asked for.

Why this module exists: when the picker rewrote a request's ``model`` (an InferenceModelRewrite canary, a
LoRA rollout), the model server answers with the name it was sent, and the client must see its own. The
response is a JSON document or an SSE stream of them, arriving in arbitrary chunks that are forwarded as they
come (first-token latency matters), so parsing each chunk is neither possible nor wanted. Instead every
``"model": "<served>"`` member is replaced at the byte level, holding back only as many trailing bytes of a
chunk as could be the start of a match split across chunks. Other occurrences of the name (in generated
text, for example) are left alone because they are not a ``"model"`` member.
"""

from __future__ import annotations

import re

import orjson

_MAX_SPACE = 8  # whitespace tolerated around the colon ("model": "x" from Python's json, none from most servers)


class ModelNameRestorer:
    """Feed response body chunks in order; each call returns the bytes that can be forwarded now."""

    __slots__ = ("_max_match", "_pattern", "_pending", "_replacement", "replaced")

    def __init__(self, served: str, client: str) -> None:
        served_json = orjson.dumps(served)  # the name as it appears in JSON, quotes included
        self._pattern = re.compile(rb'("model"\s{0,%d}:\s{0,%d})' % (_MAX_SPACE, _MAX_SPACE) + re.escape(served_json))
        self._replacement = orjson.dumps(client)
        self._max_match = len(b'"model"') + 2 * _MAX_SPACE + 1 + len(served_json)
        self._pending = b""
        self.replaced = 0

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        # A match starting before ``limit`` lies wholly inside ``data``; one starting later may continue in the
        # next chunk, so those bytes wait (unless this is the last chunk).
        limit = len(data) if end_of_stream else max(0, len(data) - (self._max_match - 1))
        out: list[bytes] = []
        pos = 0
        for match in self._pattern.finditer(data):
            if match.start() >= limit:
                break
            out.append(data[pos : match.start()])
            out.append(match.group(1))
            out.append(self._replacement)
            pos = match.end()
            self.replaced += 1
        cut = max(limit, pos)
        out.append(data[pos:cut])
        self._pending = data[cut:]
        return b"".join(out)
