"""The ``streamlearn`` command line's arguments (one subcommand each)."""

from __future__ import annotations

import argparse
from importlib.metadata import version


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamlearn",
        description=(
            "Learn online from drifting streams: per-key models adapted per event with AdaGrad "
            "from a meta-learned start, drift detection, regret and metrics for Prometheus."
        ),
        epilog="Run 'streamlearn COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"streamlearn {version('streamlearn')}")
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
    mt.add_argument(
        "--inner-order",
        choices=["online", "batch"],
        help="one step per example in order, scored prequentially (default: meta.inner_order), "
        "or --inner-steps steps on the whole support set",
    )
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
    mt.add_argument(
        "--version",
        type=int,
        default=1,
        help="version number of the meta-init (0: the Unix time, so each run is newer)",
    )
    mt.add_argument(
        "--publish",
        action="store_true",
        help="also publish it to kafka.topics.meta_init: replicas with kafka.handoff install it",
    )
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

    lab = sub.add_parser(
        "label",
        help="answer the daemon's label queries: interactively, or --oracle from withheld truth",
        description=(
            "Read label queries from kafka.topics.queries and send answers to "
            "kafka.topics.labels. Interactive by default (a query is shown, you type its "
            "label); with --oracle TRUTH it answers from the JSONL 'streamlearn simulate "
            "--withhold F --truth TRUTH' wrote, after --delay seconds, with --noise, for a "
            "share --answer-rate of the queries."
        ),
    )
    _config_args(lab)
    lab.add_argument("--oracle", default=None, metavar="TRUTH", help="answer from this truth file")
    lab.add_argument(
        "--delay", type=float, default=0.0, metavar="S", help="seconds before answering"
    )
    lab.add_argument(
        "--noise",
        type=float,
        default=0.0,
        metavar="F",
        help="probability of a wrong class (regression: standard deviation added)",
    )
    lab.add_argument("--answer-rate", type=float, default=1.0, metavar="F", help="share answered")
    lab.add_argument("--seed", type=int, default=0)
    lab.add_argument("--labeller", default=None, help="name sent with each answer")
    lab.add_argument("--group", default="streamlearn-labellers", help="consumer group")
    lab.add_argument("--max-answers", type=int, default=0, metavar="N", help="stop after N answers")
    lab.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        metavar="S",
        help="stop after S seconds without queries (and nothing left to answer)",
    )

    rep = sub.add_parser(
        "report",
        help="plot a run's metrics (a metrics log or a Prometheus) as PNG panels and one HTML",
        description=(
            "Cumulative loss and regret, rolling accuracy with drift markers, step size and "
            "controller signals, labels spent against the budget: PNG panels and a "
            "self-contained report.html. Read from the daemon's metrics log "
            "(metrics.log_path) or from a Prometheus that scraped it."
        ),
    )
    src = rep.add_mutually_exclusive_group(required=True)
    src.add_argument("--log", metavar="FILE", help="a metrics log (metrics.log_path)")
    src.add_argument(
        "--prometheus", metavar="URL", help="a Prometheus server, e.g. http://127.0.0.1:9090"
    )
    rep.add_argument(
        "--out", metavar="DIR", default="report", help="output folder (default: report)"
    )
    rep.add_argument(
        "--minutes",
        type=float,
        default=60.0,
        help="with --prometheus: the last N minutes (default 60)",
    )
    rep.add_argument(
        "--step",
        type=float,
        default=15.0,
        metavar="S",
        help="with --prometheus: seconds between points (default 15)",
    )
    rep.add_argument(
        "--selector",
        default="",
        help='with --prometheus: extra label matchers, e.g. job="streamlearn"',
    )
    rep.add_argument("--title", default="streamlearn run")

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
