#!/bin/sh
# Like the official image: arguments starting with "-" are nats-server flags.
set -eu
case "${1:-}" in
    -*) set -- nats-server "$@" ;;
esac
exec "$@"
