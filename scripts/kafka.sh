#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft: broker + controller) on 127.0.0.1 for development,
# tests and CI. Needs Java 17+ and Maven; resolves Kafka's server jars from Maven Central
# into ~/.cache/streamlearn/kafka/<version>/libs (once), keeps its data and log under
# ${STREAMLEARN_KAFKA_HOME:-~/.cache/streamlearn/kafka/run}.
#
#   scripts/kafka.sh start     # idempotent; waits (STREAMLEARN_KAFKA_START_TIMEOUT, 180 s)
#                              # until the broker answers
#   scripts/kafka.sh stop      # stops the broker it started, by its pid
#   scripts/kafka.sh status    # exit 0 when running and answering
#   scripts/kafka.sh restart
#   scripts/kafka.sh reset     # stops it and deletes its data (topics, offsets), keeps the jars
#
# Start time grows with the partitions on disk (a broker that was killed recovers each one),
# so the tests delete their topics at the end of a session and CI starts from a reset.
#
# Ports: STREAMLEARN_KAFKA_PORT (9092), controller STREAMLEARN_KAFKA_CONTROLLER_PORT (9093).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/streamlearn
LIBS=$CACHE/kafka/$VERSION/libs
RUN=${STREAMLEARN_KAFKA_HOME:-$CACHE/kafka/run}
PORT=${STREAMLEARN_KAFKA_PORT:-9092}
CPORT=${STREAMLEARN_KAFKA_CONTROLLER_PORT:-9093}
PIDFILE=$RUN/kafka.pid
LOG=$RUN/kafka.log
CONF=$RUN/server.properties
HEAP=${STREAMLEARN_KAFKA_HEAP:-512m}
START_TIMEOUT=${STREAMLEARN_KAFKA_START_TIMEOUT:-180}
# Kafka 4's group coordinator holds each offset commit this long to batch it with others
# (default 5 ms): one broker with a few consumer groups has little to batch, and the wait is
# most of a commit's round trip (bench/kafka_throughput.py, the paced phases).
COORDINATOR_LINGER_MS=${STREAMLEARN_KAFKA_COORDINATOR_LINGER_MS:-0}

say() { echo "kafka.sh: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

resolve() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { say "Maven (mvn) is required to resolve Kafka's jars"; exit 1; }
  command -v java >/dev/null || { say "Java 17+ is required to run Kafka"; exit 1; }
  say "resolving Apache Kafka $VERSION from Maven Central into $LIBS"
  rm -rf "$LIBS"
  mkdir -p "$LIBS"
  mvn -q -B -Dstyle.color=never -f "$HERE/kafka/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS"
  # Both bindings must not be on the class path: keep log4j2's, drop any reload4j one.
  rm -f "$LIBS"/slf4j-reload4j-*.jar "$LIBS"/slf4j-api-1.*.jar
  touch "$LIBS/.complete"
}

configure() {
  mkdir -p "$RUN/data"
  cat >"$CONF" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$RUN/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
group.coordinator.append.linger.ms=$COORDINATOR_LINGER_MS
EOF
  cat >"$RUN/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $LOG
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
EOF
}

java_run() {
  java -Xmx"$HEAP" -Xms128m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$RUN/log4j2.properties" -cp "$LIBS/*" "$@"
}

format_storage() {
  [ -f "$RUN/data/meta.properties" ] && return 0
  local id
  id=$(java_run kafka.tools.StorageTool random-uuid | tail -n 1)
  java_run kafka.tools.StorageTool format -t "$id" -c "$CONF" --standalone >>"$RUN/format.log" 2>&1 \
    || { say "storage format failed; see $RUN/format.log"; tail -n 20 "$RUN/format.log" >&2; exit 1; }
}

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if port_open "$PORT"; then return 0; fi
    if ! running_pid >/dev/null; then
      say "the broker exited during start; last lines of $LOG:"
      tail -n 30 "$LOG" >&2 || true
      return 1
    fi
    sleep 0.5
  done
  say "the broker did not answer on 127.0.0.1:$PORT within $START_TIMEOUT s" \
    "($(find "$RUN/data" -mindepth 1 -maxdepth 1 -type d | wc -l) partition directories); last lines of $LOG:"
  tail -n 30 "$LOG" >&2 || true
  return 1
}

start() {
  if pid=$(running_pid) && port_open "$PORT"; then
    say "already running (pid $pid) on 127.0.0.1:$PORT"
    return 0
  fi
  if port_open "$PORT"; then
    say "something else already listens on 127.0.0.1:$PORT"; return 1
  fi
  resolve
  mkdir -p "$RUN"
  configure
  format_storage
  nohup java -Xmx"$HEAP" -Xms128m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$RUN/log4j2.properties" -cp "$LIBS/*" kafka.Kafka "$CONF" \
    >>"$RUN/kafka.out" 2>&1 &
  echo $! >"$PIDFILE"
  wait_ready
  say "started (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT; log $LOG"
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    say "not running"; rm -f "$PIDFILE"; return 0
  fi
  kill "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; say "stopped"; return 0; }
    sleep 0.5
  done
  say "pid $pid did not stop in 30 s; killing it"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
}

reset() {
  stop
  rm -rf "$RUN/data" "$RUN/format.log"
  say "data deleted under $RUN/data"
}

status() {
  if pid=$(running_pid) && port_open "$PORT"; then
    echo "running (pid $pid) on 127.0.0.1:$PORT"; return 0
  fi
  echo "not running"; return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  reset) reset ;;
  resolve) resolve ;;
  *) echo "usage: $0 start|stop|restart|status|reset|resolve" >&2; exit 2 ;;
esac
