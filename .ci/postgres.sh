#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the knowledge-base tests.
#   .ci/postgres.sh start DIR PORT   installs Debian's postgresql if missing, starts a server whose
#                                    data lives in DIR, listening on 127.0.0.1:PORT only; prints its URL
#   .ci/postgres.sh stop DIR         stops it
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?data folder}
pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
run_as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
case "$cmd" in
  start)
    port=${3:?port}
    if [ -z "$(pgbin)" ]; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null
    fi
    bin=$(pgbin)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    run_as_postgres "'$bin/initdb' -D '$dir/data' -A trust -U postgres" >/dev/null
    run_as_postgres "'$bin/pg_ctl' -D '$dir/data' -l '$dir/log' -w -o \"-c listen_addresses=127.0.0.1 -p $port -k '$dir'\" start" >/dev/null
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    run_as_postgres "'$(pgbin)/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null 2>&1 || true
    ;;
esac
