"""``streamlearn`` command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import yaml

from streamlearn.cli.parser import build_parser
from streamlearn.config import Config, ConfigError, dump_config, load_config
from streamlearn.ops.redact import redact_logs
from streamlearn.service.quarantine import PollFailedError

log = logging.getLogger("streamlearn")


def _cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    # torch and the daemon load here, not at import: a bad configuration fails in well
    # under a second.
    import torch
    from prometheus_client import CollectorRegistry

    from streamlearn.ops.http import ServiceHTTP
    from streamlearn.service.daemon import Daemon

    torch.set_num_threads(cfg.service.torch_threads)
    registry = CollectorRegistry()
    daemon = Daemon(cfg, registry)
    if args.meta_init:
        from streamlearn.meta.initfile import load_meta_init

        init = load_meta_init(args.meta_init, daemon.spec)
        daemon.install_meta_init(init)
        log.info("meta-init %s: version %d (%s)", args.meta_init, init.version, init.summary)
    server = None
    if cfg.metrics.enabled:
        port = cfg.metrics.port if args.metrics_port is None else args.metrics_port
        server = ServiceHTTP(registry, cfg.metrics.host, port, daemon.ready)
        try:
            bound = server.start()
        except OSError as exc:
            log.error("cannot serve metrics on %s:%s: %s", cfg.metrics.host, port, exc.strerror)
            return 2
        log.info("serving /metrics /healthz /readyz on http://%s:%d", cfg.metrics.host, bound)

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: draining and stopping", signal.Signals(signum).name)
        daemon.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    src = cfg.source
    what = src.synthetic.family if src.kind == "synthetic" else src.file.path
    log.info(
        "source %s (%s), model %s %s", src.kind, what, cfg.model.task, cfg.model.hidden or "linear"
    )
    try:
        code = daemon.run(max_events=args.max_events, status=log.info)
    finally:
        if server is not None:
            server.stop()
    log.info("stopped cleanly")
    return code


def _cmd_simulate(cfg: Config, args: argparse.Namespace) -> int:
    from streamlearn.cli.simulate import events_for, open_truth, simulate

    if args.withhold is not None and not 0.0 <= args.withhold <= 1.0:
        print(f"streamlearn: --withhold = {args.withhold}: must be within [0, 1]", file=sys.stderr)
        return 2
    if args.rate < 0:
        print(f"streamlearn: --rate = {args.rate}: must be >= 0", file=sys.stderr)
        return 2
    n = args.events if args.events is not None else (0 if args.file else 100_000)
    stream = events_for(
        cfg, file=args.file, events=n, withhold=args.withhold, label_column=args.label_column
    )
    truth = open_truth(args.truth)
    try:
        report = simulate(
            cfg,
            stream,
            total=n or None,
            rate=args.rate,
            truth=truth,
            topic=args.topic,
            progress=not args.no_progress,
        )
    finally:
        if truth is not None:
            truth.close()
    log.info("%s", report.line())
    return 0


def _cmd_label(cfg: Config, args: argparse.Namespace) -> int:
    from streamlearn.active.oracle import Oracle, TruthFile
    from streamlearn.cli.label import LabelReport, interactive, open_labeller_io, oracle_loop

    report = LabelReport()
    oracle = None
    if args.oracle:
        truth = TruthFile(args.oracle)  # followed while a simulator still writes it
        oracle = Oracle(
            truth,
            task=cfg.model.task,
            n_classes=cfg.model.n_classes,
            delay_s=args.delay,
            noise=args.noise,
            answer_rate=args.answer_rate,
            labeller=args.labeller or "oracle",
            seed=args.seed,
        )
        log.info("oracle over %d withheld labels from %s", len(truth), args.oracle)
    reader, sink, send = open_labeller_io(cfg, args.group, report)
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if oracle is None:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        if oracle is not None:
            signal.signal(signal.SIGINT, _stop)
            oracle_loop(
                reader.poll,
                send,
                oracle,
                report,
                max_answers=args.max_answers,
                idle_timeout_s=args.idle_timeout,
                stop=lambda: stopping,
            )
        else:
            interactive(
                cfg,
                reader.poll,
                send,
                report,
                labeller=args.labeller or "human",
                max_answers=args.max_answers,
                idle_timeout_s=args.idle_timeout,
            )
    except (KeyboardInterrupt, EOFError):  # Ctrl-C, or the end of piped input: stop cleanly
        log.info("input ended: stopping")
    finally:
        sink.flush()
        sink.close()
        reader.close()
    log.info("%s", report.line())
    return 0


def _cmd_meta_train(cfg: Config, args: argparse.Namespace) -> int:
    from streamlearn.cli.simulate import events_for
    from streamlearn.meta.distributed import leave, world_from_env
    from streamlearn.meta.initfile import save_meta_init
    from streamlearn.meta.offline import OfflineSettings, build_buffers, meta_train, to_meta_init
    from streamlearn.service.wiring import build_spec

    settings = OfflineSettings(
        method=args.method,
        steps=args.steps,
        tasks_per_step=args.tasks_per_step,
        support=args.support,
        query=args.query,
        inner_steps=args.inner_steps,
        inner_order=args.inner_order or cfg.meta.inner_order,
        inner_rate=cfg.learner.learning_rate,
        lam=cfg.learner.proximal_lambda,
        outer_lr=args.outer_lr,
        first_order=args.first_order,
        segment_events=args.segment_events,
        initial_accumulator=cfg.learner.initial_accumulator,
        pool_size=args.pool_size,
        pool_steps=args.pool_steps,
    )
    seed = args.seed if args.seed is not None else cfg.source.synthetic.seed
    synthetic = cfg.source.synthetic.model_copy(update={"seed": seed})
    train_cfg = cfg.model_copy(
        update={"source": cfg.source.model_copy(update={"synthetic": synthetic})}
    )
    stream = events_for(
        train_cfg,
        file=args.file,
        events=0 if args.file else args.events,
        withhold=None,
        label_column=args.label_column,
    )
    spec = build_spec(cfg)
    train, test, scaler = build_buffers(stream, spec.n_features, settings)
    log.info(
        "training tasks: %d (%d examples); held-out tasks: %d",
        train.n_tasks,
        train.n_examples,
        test.n_tasks,
    )
    m = cfg.model
    theta0 = spec.init(seed=m.seed, kind=m.init, scale=m.init_scale)
    world = world_from_env()  # under torchrun: DDP across the ranks
    try:
        result = meta_train(
            spec, theta0, train, test, settings, progress=not args.no_progress, world=world
        )
    finally:
        if world is not None:
            leave()
    if world is not None and not world.is_main:
        return 0
    version = args.version or int(time.time())  # 0: by the clock, newer at every run
    save_meta_init(args.out, spec, to_meta_init(result, scaler, version))
    if args.publish:
        from streamlearn.meta.topic import MetaInitTopic

        topic = MetaInitTopic(cfg.kafka)
        try:
            topic.publish(args.out)
        finally:
            topic.close()
        log.info("published version %d to %s", version, cfg.kafka.topics.meta_init)
    summary = result.summary
    pool = ""
    if "held_out_after_pool" in summary:
        pool = f" (pool of {len(result.pool)} + shared: {summary['held_out_after_pool']:.4f})"
    log.info(
        "held-out meta-loss %.4f -> %.4f%s; wrote %s",
        summary["held_out_before"],
        summary["held_out_after"],
        pool,
        args.out,
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from streamlearn.ops.report import from_log, from_prometheus, render

    try:
        if args.log:
            run = from_log(Path(args.log))
        else:
            end = time.time()
            run = from_prometheus(
                args.prometheus, end - args.minutes * 60, end, args.step, args.selector
            )
        rep = render(run, Path(args.out), args.title)
    except (OSError, ValueError) as exc:
        print(f"streamlearn report: {exc}", file=sys.stderr)
        return 2
    for key, value in rep.summary.items():
        print(f"{key:>28}: {value}", file=sys.stderr)
    print(f"wrote {rep.html} and {len(rep.images)} PNG panels", file=sys.stderr)
    return 0


def _secrets(cfg: Config) -> list[str | None]:
    sec = cfg.kafka.security
    out: list[str | None] = []
    # A file unreadable now: the client that needs it says so.
    with contextlib.suppress(OSError):
        out.append(sec.secret("sasl_password"))
    with contextlib.suppress(OSError):
        out.append(sec.secret("ssl_password"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":  # reads a finished run: no configuration involved
        return _cmd_report(args)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"streamlearn: {exc}", file=sys.stderr)
        return 2
    redact_logs(_secrets(cfg))
    logging.getLogger().setLevel(cfg.service.log_level)
    if cfg.service.log_level != "DEBUG":  # kafka-python narrates every connection at INFO
        logging.getLogger("kafka").setLevel(logging.WARNING)
        # torch's own forward-mode AD loads its decompositions through torch.jit.script on
        # the first jvp and warns about it at every start; nothing an operator can act on.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
        )
    if args.command == "config":
        print(yaml.safe_dump(dump_config(cfg), sort_keys=False), end="")
        return 0
    try:
        if args.command == "simulate":
            return _cmd_simulate(cfg, args)
        if args.command == "meta-train":
            return _cmd_meta_train(cfg, args)
        if args.command == "label":
            return _cmd_label(cfg, args)
        return _cmd_run(cfg, args)
    except PollFailedError as exc:  # the data's fault, not the configuration's: restart
        log.error("%s", exc)
        return 1
    except (ValueError, RuntimeError) as exc:  # a component rejected its config, or no broker
        print(f"streamlearn: {exc}", file=sys.stderr)
        return 2
