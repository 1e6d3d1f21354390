"""Configuration of the Kafka transport: topics, producer, connection and its security."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from streamlearn.config.base import _Strict


class TopicsConfig(_Strict):
    """Topic names of the design's topology."""

    events: str = "streamlearn.events"
    predictions: str = "streamlearn.predictions"
    dead_letter: str = "streamlearn.dead-letter"
    queries: str = "streamlearn.queries"
    labels: str = "streamlearn.labels"
    # Compacted; key state handed between replicas (kafka.handoff, streamlearn.service.handoff).
    state: str = "streamlearn.key-state"
    # Compacted; meta-init versions every replica installs (kafka.handoff, meta.topic).
    meta_init: str = "streamlearn.meta-init"


class ProducerConfig(_Strict):
    acks: Literal["0", "1", "all"] = "all"
    linger_ms: Annotated[int, Field(ge=0, le=60_000)] = 20
    batch_size: Annotated[int, Field(ge=1024)] = 1_048_576
    compression_type: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "none"


class KafkaSecurityConfig(_Strict):
    """TLS and SASL for the broker connection, passed to every kafka-python client.

    Secrets (``sasl_password``, ``ssl_password``) come from the environment
    (``STREAMLEARN_KAFKA__SECURITY__SASL_PASSWORD``) or from a file (``*_file``, e.g. a
    mounted Kubernetes Secret); they are never logged and print as ``**********`` in
    ``streamlearn config``."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_password_file: str | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurityConfig:
        for name in ("sasl_password", "ssl_password"):
            if getattr(self, name) is not None and getattr(self, f"{name}_file") is not None:
                raise ValueError(
                    f"kafka.security.{name} and kafka.security.{name}_file are both set: "
                    "give the secret one way"
                )
        for name in (
            "sasl_password_file",
            "ssl_password_file",
            "ssl_cafile",
            "ssl_certfile",
            "ssl_keyfile",
        ):
            path = getattr(self, name)
            if path is not None and not os.access(path, os.R_OK):
                raise ValueError(f"kafka.security.{name} = {path!r}: not a readable file")
        if self.protocol.startswith("SASL"):
            has_password = self.sasl_password is not None or self.sasl_password_file is not None
            if self.sasl_mechanism is None or self.sasl_username is None or not has_password:
                raise ValueError(
                    f"kafka.security.protocol {self.protocol!r} needs sasl_mechanism, "
                    "sasl_username and sasl_password (or sasl_password_file)"
                )
        return self

    def secret(self, name: Literal["sasl_password", "ssl_password"]) -> str | None:
        """The secret's value, from the setting or its file (read when asked, not kept)."""
        value: SecretStr | None = getattr(self, name)
        if value is not None:
            return value.get_secret_value()
        path = getattr(self, f"{name}_file")
        if path is None:
            return None
        return Path(path).read_text(encoding="utf-8").rstrip("\n")


class KafkaConfig(_Strict):
    """Broker connection, consumer group and the bounds that give back-pressure: the consumer
    fetches at most ``fetch_max_bytes`` ahead and the loop polls only after it has processed
    the previous batch, so nothing buffers without bound."""

    bootstrap_servers: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"])
    client_id: str = "streamlearn"
    group_id: str = "streamlearn-adapters"
    topics: TopicsConfig = TopicsConfig()
    partitions: Annotated[int, Field(ge=1, le=10_000)] = 4
    replication_factor: Annotated[int, Field(ge=1, le=100)] = 1
    create_topics: bool = True
    emit_predictions: bool = True
    # Several replicas in one group: key state moves with its partition through the
    # compacted topics.state (streamlearn.service.handoff); needs learner.max_keys > 0.
    handoff: bool = False
    meta_init_check_s: Annotated[float, Field(gt=0)] = 5.0  # with handoff: newer meta-init?
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    fetch_max_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    max_partition_fetch_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    session_timeout_ms: Annotated[int, Field(ge=1000)] = 10_000
    heartbeat_interval_ms: Annotated[int, Field(ge=100)] = 3_000
    max_poll_interval_ms: Annotated[int, Field(ge=1000)] = 300_000
    request_timeout_ms: Annotated[int, Field(ge=1000)] = 30_000
    reconnect_backoff_ms: Annotated[int, Field(ge=1)] = 100
    reconnect_backoff_max_ms: Annotated[int, Field(ge=1)] = 10_000
    producer: ProducerConfig = ProducerConfig()
    security: KafkaSecurityConfig = KafkaSecurityConfig()

    @model_validator(mode="after")
    def _heartbeat(self) -> KafkaConfig:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"kafka.heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below "
                f"kafka.session_timeout_ms ({self.session_timeout_ms})"
            )
        return self
