"""Meta-init versions shared by every replica through a compacted topic.

``streamlearn meta-train --publish`` (or any process with the config's Kafka) writes a
meta-init file's bytes to ``kafka.topics.meta_init`` (partition 0, one key: compaction keeps
the newest); with ``kafka.handoff`` on, every daemon reads that partition from its start and
installs any version newer than its own, checked every ``kafka.meta_init_check_s``. So a
replica started later, or restarted, converges on the newest version too.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamlearn.meta.initfile import MetaInit, load_meta_init

if TYPE_CHECKING:
    from streamlearn.config.kafka import KafkaConfig
    from streamlearn.model.spec import ModelSpec

log = logging.getLogger("streamlearn.meta")

KEY = b"meta-init"


class MetaInitTopic:
    """Publish meta-init files and fetch the newest one (not a doctest: needs a broker)."""

    def __init__(self, cfg: KafkaConfig) -> None:
        self.cfg = cfg
        self.topic = cfg.topics.meta_init
        self._consumer: Any = None  # kafka-python clients, made on first use
        self._producer: Any = None

    def publish(self, path: str | Path) -> None:
        from kafka import KafkaProducer

        from streamlearn.io.kafka import client_settings

        if self._producer is None:
            self._producer = KafkaProducer(acks="all", **client_settings(self.cfg))
        self._producer.send(self.topic, key=KEY, value=Path(path).read_bytes(), partition=0)
        self._producer.flush(timeout=self.cfg.request_timeout_ms / 1000)

    def newest(self) -> bytes | None:
        """The newest meta-init published since the last call (the first call reads the
        topic from its start); None when there is none. Does not block."""
        from kafka import KafkaConsumer, TopicPartition

        from streamlearn.io.kafka import client_settings

        if self._consumer is None:
            consumer = KafkaConsumer(
                group_id=None, enable_auto_commit=False, **client_settings(self.cfg)
            )
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            self._consumer = consumer
        latest = None
        for records in self._consumer.poll(timeout_ms=0, max_records=100).values():
            for r in records:
                if r.key == KEY and r.value:
                    latest = r.value
        return latest

    def newest_file(self) -> Path | None:
        """:meth:`newest` written to a temporary file (meta-init files load from paths)."""
        data = self.newest()
        if data is None:
            return None
        with tempfile.NamedTemporaryFile(suffix=".pt", delete=False) as f:
            f.write(data)
        return Path(f.name)

    def newer_than(self, version: int, spec: ModelSpec) -> MetaInit | None:
        """The newest published meta-init when its version is above ``version`` (a bad
        one is logged and skipped)."""
        try:
            path = self.newest_file()
            if path is None:
                return None
            try:
                init = load_meta_init(path, spec)
            finally:
                path.unlink(missing_ok=True)
        except (ValueError, RuntimeError, OSError) as exc:
            log.error("published meta-init not usable: %s", exc)
            return None
        return init if init.version > version else None

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
        if self._producer is not None:
            self._producer.close(timeout=5)
