#!/bin/bash
# The subset of the official postgres image's entrypoint that edaenv stacks use.
set -euo pipefail

if [[ ${1:-} == -* ]]; then
    set -- postgres "$@"
fi

if [[ ${1:-} != postgres ]]; then
    exec "$@"
fi

if [[ $(id -u) == 0 ]]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

export POSTGRES_USER=${POSTGRES_USER:-postgres}
export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

# Like the official 18 image: with PGDATA at 18's place and nothing there yet, a cluster in an
# older place, or a volume mounted at the old /var/lib/postgresql/data, is refused, so a stack
# mounting its volume where 17 kept the data fails here as it does with postgres:18.
if [[ ! -s $PGDATA/PG_VERSION && $PGDATA == /var/lib/postgresql/18/docker ]]; then
    old=()
    for d in /var/lib/postgresql /var/lib/postgresql/data /var/lib/postgresql/*/docker; do
        if [[ -s $d/PG_VERSION ]]; then old+=("$d"); fi
    done
    if [[ ${#old[@]} == 0 ]] && mountpoint -q /var/lib/postgresql/data; then
        old+=("/var/lib/postgresql/data (unused mount/volume)")
    fi
    if [[ ${#old[@]} != 0 ]]; then
        echo "Error: in 18+, these Docker images are configured to store database data in a" >&2
        echo "       major-version-specific directory (PGDATA=$PGDATA)." >&2
        echo "       Counter to that, there appears to be PostgreSQL data in:" >&2
        printf '         %s\n' "${old[@]}" >&2
        echo "       Place a single mount at /var/lib/postgresql instead." >&2
        exit 1
    fi
fi

if [[ ! -s $PGDATA/PG_VERSION ]]; then
    if [[ -z ${POSTGRES_PASSWORD:-} && ${POSTGRES_HOST_AUTH_METHOD:-} != trust ]]; then
        echo "error: POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"

    # While initialising, listen on the unix socket only so healthchecks keep failing.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
    psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    if [[ $POSTGRES_DB != postgres ]]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    export PGPASSWORD=${POSTGRES_PASSWORD:-}
    for f in /docker-entrypoint-initdb.d/*; do
        case $f in
            *.sh)
                echo "running $f"
                # shellcheck disable=SC1090  # sourced like the official image does
                if [[ -x $f ]]; then "$f"; else . "$f"; fi
                ;;
            *.sql)
                echo "running $f"
                "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f"
                ;;
            *.sql.gz)
                echo "running $f"
                gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB"
                ;;
            *) ;;
        esac
    done
    unset PGPASSWORD
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
