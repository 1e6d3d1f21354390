"""What the config builds: the model layout and the source and sink it names."""

from __future__ import annotations

import logging

from streamlearn.active.pending import PendingQueries
from streamlearn.config import Config
from streamlearn.io.base import Sink, Source
from streamlearn.io.files import replay
from streamlearn.io.memory import MemorySink, MemorySource
from streamlearn.io.synthetic import build_family
from streamlearn.learning.learner import OnlineLearner
from streamlearn.meta.topic import MetaInitTopic
from streamlearn.model.spec import ModelSpec
from streamlearn.ops.metrics import ServiceMetrics
from streamlearn.service.handoff import KeyHandoff, StateTopic
from streamlearn.state.residency import KeyStateHolder, Residency

log = logging.getLogger("streamlearn")


def build_spec(cfg: Config) -> ModelSpec:
    m = cfg.model
    return ModelSpec(m.n_features, m.task, m.n_classes, tuple(m.hidden), m.activation)


def attach_residency(
    cfg: Config, learner: OnlineLearner, holders: list[KeyStateHolder]
) -> Residency | None:
    """Bound the learner's keys at ``learner.max_keys`` (0: unbounded, None returned),
    spilling beside the checkpoints; ``holders`` have per-key state that follows the keys."""
    if not cfg.learner.max_keys:
        return None
    res = Residency.open(cfg.learner.max_keys, cfg.checkpoint.dir)
    res.holders.extend(holders)
    learner.residency = res
    return res


def build_io(cfg: Config) -> tuple[Source, Sink]:
    """The source and sink the config names; Kafka topics are created when absent."""
    if cfg.source.kind == "kafka":
        from streamlearn.io.kafka import KafkaSink, KafkaSource, ensure_topics

        k = cfg.kafka
        if k.create_topics:
            t = k.topics
            names = [t.events, t.predictions, t.dead_letter, t.queries, t.labels]
            compacted = [t.state, t.meta_init] if k.handoff else []
            created = ensure_topics(k, names + compacted, compacted=compacted)
            if created:
                log.info("created topics %s with %d partitions", created, k.partitions)
        topics = [k.topics.events] + ([k.topics.labels] if cfg.active.enabled else [])
        return KafkaSource(k, cfg.source.batch_size, topics), KafkaSink(k)
    return build_source(cfg), MemorySink()


def build_source(cfg: Config) -> Source:
    """The embedded source the config names."""
    src = cfg.source
    if src.kind == "kafka":
        raise ValueError("source.kind 'kafka' is built by build_io (it needs its sink)")
    if src.kind == "file":
        return MemorySource(replay(src.file), topic=f"file:{src.file.path}", rate=src.file.rate)
    return MemorySource(
        build_family(src.synthetic),
        topic=f"synthetic:{src.synthetic.family}",
        rate=src.synthetic.rate,
    )


def attach_handoff(
    cfg: Config,
    learner: OnlineLearner,
    source: Source,
    metrics: ServiceMetrics,
    pending: PendingQueries | None = None,
) -> KeyHandoff | None:
    """With ``kafka.handoff`` and a Kafka source: key state follows its partition."""
    from streamlearn.io.kafka import KafkaSource

    if not (cfg.kafka.handoff and isinstance(source, KafkaSource)):
        return None
    handoff = KeyHandoff(learner, StateTopic(cfg.kafka), metrics, cfg.kafka.topics.events)
    handoff.meta_topic = MetaInitTopic(cfg.kafka)
    handoff.meta_check_s = cfg.kafka.meta_init_check_s
    handoff.source = source
    handoff.pending = pending
    source.seek_on_assign = False
    source.on_assigned.append(handoff.assigned)
    return handoff
