#!/bin/sh
# Create every StrideWatch topic with the partition count the state table expects
# (base.settings.Settings.all_topics names the same topics). Safe to run again: existing
# topics are left alone, and the worker refuses to start if a count differs.
set -eu
bin="${KAFKA_BIN:-/opt/kafka/bin}"
bootstrap="${KAFKA_BOOTSTRAP:?set KAFKA_BOOTSTRAP}"
partitions="${STRIDEWATCH_KAFKA_PARTITIONS:?set STRIDEWATCH_KAFKA_PARTITIONS}"
prefix="${STRIDEWATCH_TOPIC_PREFIX:-stridewatch}"
app_id="${STRIDEWATCH_APP_ID:-$prefix}"
replication="${KAFKA_REPLICATION:-3}"
min_isr="${KAFKA_MIN_INSYNC_REPLICAS:-2}"

create() {
  topic="$1"; count="$2"; shift 2
  "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "$topic" --partitions "$count" --replication-factor "$replication" \
    --config "min.insync.replicas=$min_isr" "$@"
  echo "topic $topic: $count partitions, replication $replication"
}

for name in events alerts metrics deadletters; do
  create "$prefix.$name" "$partitions"
done
# the forgotten runners: compacted, so a forgotten runner never expires
create "$prefix.forgotten" "$partitions" --config cleanup.policy=compact
# the state table's changelog: compacted, the newest state per key kept for ever
create "$app_id-runner_state-changelog" "$partitions" --config cleanup.policy=compact
# Faust's partition-assignment topic
create "$app_id-__assignor-__leader" 1
