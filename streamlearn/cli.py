"""``streamlearn`` command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import torch
import yaml
from prometheus_client import CollectorRegistry

from streamlearn import __version__
from streamlearn.config import Config, ConfigError, dump_config, load_config

log = logging.getLogger("streamlearn")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamlearn",
        description=(
            "Learn online from drifting streams: per-key models adapted per event with AdaGrad "
            "from a meta-learned start, drift detection, regret and metrics for Prometheus."
        ),
        epilog="Run 'streamlearn COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"streamlearn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run the daemon until SIGINT/SIGTERM, the source ends, or --max-events",
        description=(
            "Run the daemon: poll the configured source, predict, learn from labels, detect "
            "drift, and serve /metrics, /healthz and /readyz. Without --config it runs the "
            "embedded default (config/default.yaml): an in-process drifting stream."
        ),
    )
    _config_args(run)
    run.add_argument(
        "--max-events",
        type=int,
        default=0,
        metavar="N",
        help="stop after N input records (default: run until stopped)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="override metrics.port (0 picks a free port, printed at start)",
    )
    run.add_argument(
        "--meta-init",
        default=None,
        metavar="FILE",
        help="start keys (and drift resets) from this meta-init (streamlearn meta-train)",
    )

    mt = sub.add_parser(
        "meta-train",
        help="meta-train a starting point offline and write a meta-init file",
        description=(
            "Meta-train theta0 (and per-parameter inner rates) on the tasks of a stream: the "
            "configured synthetic family (tasks = entity x concept segment) or --file "
            "(tasks = entity x --segment-events). Writes FILE for 'run --meta-init'."
        ),
    )
    _config_args(mt)
    mt.add_argument("--out", required=True, metavar="FILE", help="meta-init file to write")
    mt.add_argument("--file", default=None, metavar="PATH", help="train on this CSV/JSONL file")
    mt.add_argument("--label-column", default=None, metavar="NAME")
    mt.add_argument(
        "--events",
        type=int,
        default=100_000,
        metavar="N",
        help="training events from the synthetic family (default 100,000)",
    )
    mt.add_argument(
        "--seed",
        type=int,
        default=None,
        help="synthetic seed (default: the config's, i.e. the same family: the first "
        "--events events of the stream are the history it learns from)",
    )
    mt.add_argument("--method", default="maml", choices=("maml", "imaml"))
    mt.add_argument("--steps", type=int, default=2000, help="outer steps (default 2000)")
    mt.add_argument("--tasks-per-step", type=int, default=16)
    mt.add_argument("--support", type=int, default=10, help="support examples per task")
    mt.add_argument("--query", type=int, default=10, help="query examples per task")
    mt.add_argument("--inner-steps", type=int, default=1)
    mt.add_argument("--outer-lr", type=float, default=3e-3)
    mt.add_argument("--first-order", action="store_true")
    mt.add_argument("--segment-events", type=int, default=500)
    mt.add_argument(
        "--pool-size",
        type=int,
        default=1,
        help="K > 1: also train K starts for recurring concepts, one per cluster of tasks",
    )
    mt.add_argument("--pool-steps", type=int, default=500, help="outer steps per pool member")
    mt.add_argument("--no-progress", action="store_true")

    sim = sub.add_parser(
        "simulate",
        help="produce a synthetic family or a CSV/JSONL file into the events topic",
        description=(
            "Produce events into the Kafka events topic (kafka.topics.events), keyed by entity: "
            "the configured synthetic family (source.synthetic), or --file replayed in row "
            "order. Labels withheld with --withhold are written to --truth as JSONL "
            "(event_id, key, y) for an oracle labeller."
        ),
    )
    _config_args(sim)
    sim.add_argument("--file", default=None, metavar="PATH", help="replay this CSV/JSONL file")
    sim.add_argument(
        "--label-column",
        default=None,
        metavar="NAME",
        help="label column of --file (default: source.file.label_column)",
    )
    sim.add_argument(
        "--events",
        type=int,
        default=None,
        metavar="N",
        help="how many events (default: 100,000 synthetic, or the whole file)",
    )
    sim.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="R",
        help="events per second (default 0: as fast as possible)",
    )
    sim.add_argument(
        "--withhold",
        type=float,
        default=None,
        metavar="F",
        help="fraction of labels to withhold, 0..1 (default: from the config)",
    )
    sim.add_argument("--truth", default=None, metavar="FILE", help="write withheld labels here")
    sim.add_argument("--topic", default=None, help="override kafka.topics.events")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")

    show = sub.add_parser(
        "config",
        help="print the validated configuration (after env overrides) as YAML",
        description="Validate the configuration and print the effective tree.",
    )
    _config_args(show)
    return p


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=None,
        metavar="FILE",
        help="YAML config file (default: config/default.yaml); STREAMLEARN_* env vars override",
    )


def _cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    from streamlearn.daemon import Daemon
    from streamlearn.http import ServiceHTTP

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
    from streamlearn.simulate import events_for, open_truth, simulate

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


def _cmd_meta_train(cfg: Config, args: argparse.Namespace) -> int:
    from streamlearn.meta.initfile import save_meta_init
    from streamlearn.meta.offline import OfflineSettings, build_buffers, meta_train, to_meta_init
    from streamlearn.simulate import events_for
    from streamlearn.wiring import build_spec

    settings = OfflineSettings(
        method=args.method,
        steps=args.steps,
        tasks_per_step=args.tasks_per_step,
        support=args.support,
        query=args.query,
        inner_steps=args.inner_steps,
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
    result = meta_train(spec, theta0, train, test, settings, progress=not args.no_progress)
    save_meta_init(args.out, spec, to_meta_init(result, scaler, 1))
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    logging.getLogger().setLevel(cfg.service.log_level)
    if args.command == "config":
        print(yaml.safe_dump(dump_config(cfg), sort_keys=False), end="")
        return 0
    try:
        if args.command == "simulate":
            return _cmd_simulate(cfg, args)
        if args.command == "meta-train":
            return _cmd_meta_train(cfg, args)
        return _cmd_run(cfg, args)
    except (ValueError, RuntimeError) as exc:  # a component rejected its config, or no broker
        print(f"streamlearn: {exc}", file=sys.stderr)
        return 2
