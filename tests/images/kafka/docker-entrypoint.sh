#!/bin/bash
# Runs a Tansu broker on the inter-broker listener and a `tansu proxy` for every other
# advertised listener, so each listener advertises its own address in metadata.
# Listeners come from KAFKA_LISTENERS/KAFKA_ADVERTISED_LISTENERS (apache/kafka) or from
# `redpanda start --kafka-addr ... --advertise-kafka-addr ...` (redpanda).
set -euo pipefail

declare -A bind=() advertised=()
names=()

# parse_into ARRAY "NAME://host:port,..."; unnamed entries get the name "L<index>".
parse_into() {
    local -n into=$1
    local entry name addr i=0
    local IFS=,
    for entry in $2; do
        if [[ $entry == *://* ]]; then
            name=${entry%%://*}
            addr=${entry#*://}
        else
            name=L$i
            addr=$entry
        fi
        name=${name^^}
        # shellcheck disable=SC2034,SC2004  # a nameref to an associative array
        into[$name]=$addr
        if [[ $1 == advertised ]]; then
            names+=("$name")
        fi
        i=$((i + 1))
    done
}

broker_name=
if [[ ${1:-} == redpanda ]]; then
    kafka_addr=0.0.0.0:9092
    advertise_addr=
    shift
    while (($#)); do
        case $1 in
            --kafka-addr) kafka_addr=$2; shift ;;
            --kafka-addr=*) kafka_addr=${1#*=} ;;
            --advertise-kafka-addr) advertise_addr=$2; shift ;;
            --advertise-kafka-addr=*) advertise_addr=${1#*=} ;;
            *) ;;
        esac
        shift
    done
    parse_into bind "$kafka_addr"
    parse_into advertised "${advertise_addr:-$kafka_addr}"
elif (($#)); then
    exec "$@"
else
    parse_into advertised "${KAFKA_ADVERTISED_LISTENERS:-PLAINTEXT://localhost:9092}"
    parse_into bind "${KAFKA_LISTENERS:-${KAFKA_ADVERTISED_LISTENERS:-PLAINTEXT://:9092}}"
    broker_name=${KAFKA_INTER_BROKER_LISTENER_NAME:-}
fi
if [[ -z $broker_name || -z ${advertised[$broker_name]:-} ]]; then
    broker_name=${names[0]}
fi

# listen_url NAME: where to bind; an empty host means all interfaces.
listen_url() {
    local addr=${bind[$1]:-${advertised[$1]}}
    local host=${addr%:*}
    echo "tcp://${host:-0.0.0.0}:${addr##*:}"
}

broker_port=$(listen_url "$broker_name")
broker_port=${broker_port##*:}
mkdir -p /run/edaenv-standin
echo "127.0.0.1:$broker_port" >/run/edaenv-standin/broker

# Only the flags below configure Tansu; drop its env aliases that a stack could set.
unset LISTENER_URL ADVERTISED_LISTENER_URL ORIGIN_URL STORAGE_ENGINE SCHEMA_REGISTRY \
    OTEL_EXPORTER_OTLP_ENDPOINT

pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait; exit 0' TERM INT

# Proxies first: once the broker answers its healthcheck, every listener is up.
for name in "${names[@]}"; do
    [[ $name == "$broker_name" ]] && continue
    tansu proxy --listener-url "$(listen_url "$name")" \
        --advertised-listener-url "tcp://${advertised[$name]}" \
        --origin-url "tcp://127.0.0.1:$broker_port" &
    pids+=($!)
done
tansu broker --listener-url "$(listen_url "$broker_name")" \
    --advertised-listener-url "tcp://${advertised[$broker_name]}" &
pids+=($!)

status=0
wait -n || status=$?
echo "a Tansu process exited with status $status; stopping" >&2
kill -TERM "${pids[@]}" 2>/dev/null || true
wait || true
exit $((status == 0 ? 1 : status))
