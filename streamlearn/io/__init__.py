"""Sources and sinks: the ``Source`` / ``Sink`` protocols and their implementations."""

from streamlearn.io.base import NullSink, Sink, Source

__all__ = ["NullSink", "Sink", "Source"]
