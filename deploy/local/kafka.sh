#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft: broker + controller in one JVM) on 127.0.0.1,
# for development and the integration tests.  Jars come from Maven Central and are cached
# under .cache/kafka/lib; data lives in .cache/kafka/data.  Usage: kafka.sh up|down|status
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
home="${YUQING_KAFKA_HOME:-$root/.cache/kafka}"
port="${YUQING_KAFKA_PORT:-9092}"
controller_port="${YUQING_KAFKA_CONTROLLER_PORT:-9093}"
lib="${YUQING_KAFKA_LIB:-$home/lib}"  # jars can be shared between brokers
data="$home/data"
pidfile="$home/kafka.pid"
log="$home/kafka.log"
props="$home/server.properties"

is_up() {
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

fetch_jars() {
  if [[ -f "$lib/.complete" ]]; then return; fi
  echo "kafka: resolving the broker's jars with Maven (once) ..."
  rm -rf "$lib"
  mvn -q -B -f "$root/deploy/local/kafka-pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$lib" -DincludeScope=runtime
  touch "$lib/.complete"
}

write_config() {
  mkdir -p "$data"
  cat > "$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=-1
log.message.timestamp.after.max.ms=9223372036854775807
log.message.timestamp.before.max.ms=9223372036854775807
PROPS
  cat > "$home/log4j2.properties" <<'LOG'
rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
LOG
}

java_cmd() {
  java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$home/log4j2.properties" \
    -cp "$lib/*" "$@"
}

up() {
  if is_up; then echo "kafka: already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return; fi
  if port_open; then echo "kafka: something already listens on 127.0.0.1:$port; using it"; return; fi
  mkdir -p "$home"
  fetch_jars
  write_config
  if [[ ! -f "$data/meta.properties" ]]; then
    java_cmd kafka.tools.StorageTool format -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
      -c "$props" >/dev/null
  fi
  # setsid: the broker outlives this shell and gets its own process group for a clean stop.
  setsid bash -c "exec java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile='$home/log4j2.properties' -cp '$lib/*' kafka.Kafka '$props'" \
    >"$log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  for _ in $(seq 1 120); do
    if port_open; then echo "kafka: up on 127.0.0.1:$port (pid $(cat "$pidfile"))"; return; fi
    if ! is_up; then echo "kafka: the broker exited; last lines of $log:" >&2; tail -20 "$log" >&2; exit 1; fi
    sleep 0.5
  done
  echo "kafka: no answer on 127.0.0.1:$port after 60 s; see $log" >&2
  exit 1
}

down() {
  if ! is_up; then echo "kafka: not running"; rm -f "$pidfile"; return; fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
  echo "kafka: stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if is_up; then echo "kafka: running (pid $(cat "$pidfile"))"; else echo "kafka: not running"; exit 1; fi ;;
  reset) down; rm -rf "$data"; echo "kafka: data removed" ;;
  *) echo "usage: $0 up|down|status|reset" >&2; exit 2 ;;
esac
