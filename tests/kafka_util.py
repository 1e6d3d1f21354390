"""Helpers for the tests that run against the real broker."""

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

# Prefixes handed out in this test session; conftest deletes their topics at the end so the
# broker's data does not grow run after run (a broker's start time grows with its partitions).
SESSION_PREFIXES: set[str] = set()


def unique_prefix() -> str:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    SESSION_PREFIXES.add(prefix)
    return prefix


def delete_topics_with_prefixes(bootstrap: str, prefixes: set[str]) -> int:
    """Deletes every topic named ``<prefix>.*`` or ``<prefix>-*``; returns how many."""
    if not prefixes:
        return 0
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        doomed = [
            t
            for t in admin.list_topics()
            if any(t.startswith((p + ".", p + "-")) for p in prefixes)
        ]
        if doomed:
            admin.delete_topics(doomed, timeout_ms=30_000)
        return len(doomed)
    finally:
        admin.close()


def kafka_overrides(bootstrap: str, prefix: str, partitions: int = 3) -> dict[str, Any]:
    return {
        "bootstrap_servers": [bootstrap],
        "group_id": f"{prefix}-group",
        "partitions": partitions,
        "topics": {
            "events": f"{prefix}.events",
            "predictions": f"{prefix}.predictions",
            "dead_letter": f"{prefix}.dead-letter",
            "queries": f"{prefix}.queries",
            "labels": f"{prefix}.labels",
        },
    }


def write_config(path: Path, tree: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(tree))
    return path


def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 60.0) -> list[Any]:
    """Every message of ``topic`` from the beginning (JSON-decoded), waiting for ``expect``."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=[bootstrap],
        auto_offset_reset="earliest",
        group_id=None,
        consumer_timeout_ms=1000,
        enable_auto_commit=False,
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for msg in consumer:
                out.append(orjson.loads(msg.value))
    finally:
        consumer.close()
    return out


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[str, int]:
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = consumer.end_offsets(tps)
        return {f"{tp.topic}:{tp.partition}": int(v) for tp, v in ends.items()}
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        return {
            f"{tp.topic}:{tp.partition}": int(om.offset)
            for tp, om in offsets.items()
            if om.offset >= 0
        }
    finally:
        admin.close()
