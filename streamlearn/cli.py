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
        return _cmd_run(cfg, args)
    except ValueError as exc:  # a component rejected its configuration while being built
        print(f"streamlearn: {exc}", file=sys.stderr)
        return 2
