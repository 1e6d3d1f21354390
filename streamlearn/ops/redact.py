"""Secret values masked in every log line, whoever logs them (kafka-python's clients log
their whole configuration at DEBUG, SASL password included)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

MASK = "**********"


class RedactingFormatter(logging.Formatter):
    """Formats with ``inner``, then masks each secret (as given and as ``repr`` quotes it)
    in the whole text: message, arguments, traceback and stack alike.

    >>> import logging
    >>> fmt = RedactingFormatter(logging.Formatter("%(message)s"), ["hunter2"])
    >>> rec = logging.LogRecord("kafka", 10, "", 0, "config %r", ({"pw": "hunter2"},), None)
    >>> fmt.format(rec)
    "config {'pw': '**********'}"
    """

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        forms = {form for s in secrets if s for form in (s, repr(s)[1:-1])}
        self.secrets = sorted(forms, key=len, reverse=True)  # a longer one before its part

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


def redact_logs(secrets: Iterable[str | None], logger: logging.Logger | None = None) -> None:
    """Mask ``secrets`` in everything the handlers of ``logger`` (default: root) write."""
    values = [s for s in secrets if s]
    if not values:
        return
    for handler in (logger or logging.getLogger()).handlers:
        inner = handler.formatter or logging.Formatter()
        handler.setFormatter(RedactingFormatter(inner, values))
