"""The wire format: event, prediction, query, answer and dead-letter contracts, and the
validating decoders."""

# The package's public modules (`from streamlearn.wire import *` imports them).
__all__ = [
    "fast_decode",
    "messages",
]
