#!/bin/bash
# Stand-in for Kafka's tool: exits 0 only when the broker answers ApiVersions.
set -euo pipefail
server=127.0.0.1:9092
while (($#)); do
    case $1 in
        --bootstrap-server) server=${2%%,*}; shift ;;
        --bootstrap-server=*) server=${1#*=}; server=${server%%,*} ;;
        *) ;;
    esac
    shift
done
if kafka-ping "$server"; then
    echo "$server (id: 0 rack: null) -> (ApiVersions answered)"
else
    echo "Connection to $server failed" >&2
    exit 1
fi
