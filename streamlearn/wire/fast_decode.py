"""The events decoder's fast path: one msgspec call parses a record and checks its types.

``bench/decoders.py`` measured the choice: parsing alone, orjson and msgspec run at about the
same speed (3.8x and 4.0x the standard library's ``json``), but the daemon's whole decoder ran
at 0.91x ``json``: the per-field checks in Python after parsing cost most. A typed msgspec
``Struct`` does those checks in C while parsing (strings of 1 to ``MAX_ID_CHARS``
characters, a finite number ``ts``, exactly ``n_features`` numbers ``x``, a number or null
``y``; booleans are not numbers there). The label's rule (0/1, a class index, finite) is the
full path's own (``EventDecoder._label``), applied to what this returns. A record it does not
take goes down the full path (:class:`streamlearn.wire.messages.EventDecoder`), which names the
reason for a dead letter, so the fast path changes speed only, never what is accepted or why
something is not.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

Decoded = tuple[str, str, float, list[float], float | None]


class FastEventPath:
    """Well-formed events in one C call (the label as given: a number or None); None for
    anything else (the caller's full path).

    >>> fast = FastEventPath(n_features=2, max_id_chars=256)
    >>> fast.decode(b'{"id":"1","key":"a","ts":3,"x":[1,2.5],"y":1}')
    ('1', 'a', 3.0, [1.0, 2.5], 1.0)
    >>> fast.decode(b'{"id":"1","key":"a","x":[1,true]}') is None  # full path: reason
    True
    """

    def __init__(self, n_features: int, max_id_chars: int) -> None:
        ident = Annotated[str, msgspec.Meta(min_length=1, max_length=max_id_chars)]
        features = Annotated[
            list[float], msgspec.Meta(min_length=n_features, max_length=n_features)
        ]
        fields: list[Any] = [
            ("id", ident),
            ("key", ident),
            ("x", features),
            ("ts", float, 0.0),
            ("y", float | None, None),
        ]
        event = msgspec.defstruct("WireEvent", fields)
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(event)

    def decode(self, value: bytes) -> Decoded | None:
        try:
            ev = self._decoder.decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            # msgspec skips an unknown field by recursing into it: one nested ~1,000 deep
            # exhausts the stack; the full path's parser has its own depth limit.
            return None
        return ev.id, ev.key, ev.ts, ev.x, ev.y
