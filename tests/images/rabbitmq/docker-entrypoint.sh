#!/bin/bash
# The subset of the official rabbitmq image's behaviour that edaenv stacks use.
set -euo pipefail

if [[ ${1:-} != rabbitmq-server ]]; then
    exec "$@"
fi

# RabbitMQ 3.10 ignores RABBITMQ_DEFAULT_USER/PASS itself, so turn them into config.
defaults=/etc/rabbitmq/conf.d/20-env-defaults.conf
rm -f "$defaults"
if [[ -n ${RABBITMQ_DEFAULT_USER:-} ]]; then
    echo "default_user = $RABBITMQ_DEFAULT_USER" >>"$defaults"
fi
if [[ -n ${RABBITMQ_DEFAULT_PASS:-} ]]; then
    echo "default_pass = $RABBITMQ_DEFAULT_PASS" >>"$defaults"
fi

mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
cd /var/lib/rabbitmq
# Run the real server as PID 1 (Debian's wrapper would put `su` in between).
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
    env HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server
