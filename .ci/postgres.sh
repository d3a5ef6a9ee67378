#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the test suite.
#
# Usage (CI):  eval "$(.ci/postgres.sh)"
# Prints ONE line on stdout:  export OMICSTWIN_TEST_PG_URL=postgresql+psycopg://...
# (and, as the same line, OMICSTWIN_TEST_PG_PID / OMICSTWIN_TEST_PG_DIR for an optional
# `trap 'kill "$OMICSTWIN_TEST_PG_PID"; rm -rf "$OMICSTWIN_TEST_PG_DIR"' EXIT`).
# Everything else goes to stderr. Installs PostgreSQL with apt-get when no initdb is found.
# The server is not stopped by this script (it has returned by then): it dies with the CI
# container/job, or with the trap above.
set -euo pipefail
exec 3>&1 1>&2  # keep stdout for the single export line

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

if ! BINDIR="$(find_bindir)"; then
  echo "postgres.sh: installing PostgreSQL (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  BINDIR="$(find_bindir)"
fi
echo "postgres.sh: using $BINDIR"

# PostgreSQL refuses to run as root: run it as the postgres user (created by the Debian package).
RUN=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
  RUN=(runuser -u postgres --)
fi

PGDIR="$(mktemp -d /tmp/omicstwin-pg.XXXXXX)"
chmod 755 "$PGDIR"
[ "$(id -u)" -eq 0 ] && chown postgres "$PGDIR"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
PASSWORD="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
DBUSER=omicstwin
DBNAME=omicstwin_test

printf '%s\n' "$PASSWORD" > "$PGDIR/pwfile"
[ "$(id -u)" -eq 0 ] && chown postgres "$PGDIR/pwfile"
"${RUN[@]}" "$BINDIR/initdb" -D "$PGDIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --pwfile="$PGDIR/pwfile" -E UTF8 --locale=C.UTF-8 >"$PGDIR/initdb.log" 2>&1 \
  || { cat "$PGDIR/initdb.log"; exit 1; }
rm -f "$PGDIR/pwfile"

# Loopback only; socket in the temp dir; tuned for a throwaway test server (no durability).
"${RUN[@]}" "$BINDIR/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 start -o \
  "-c listen_addresses=127.0.0.1 -p $PORT -k $PGDIR -c fsync=off -c synchronous_commit=off \
   -c full_page_writes=off -c max_connections=200" >/dev/null 3>&- \
  || { cat "$PGDIR/server.log"; exit 1; }

for _ in $(seq 1 60); do
  "${RUN[@]}" "$BINDIR/pg_isready" -h 127.0.0.1 -p "$PORT" -q && break
  sleep 0.5
done
"${RUN[@]}" "$BINDIR/pg_isready" -h 127.0.0.1 -p "$PORT" -q || { cat "$PGDIR/server.log"; exit 1; }

# CREATEDB: the test fixtures create and drop a fresh database per session.
# CREATEROLE: tests/store/test_pg_roles.py creates a service role and a writer role, applies
# `omicstwin db roles` and checks what each may do (then drops them).
"${RUN[@]}" "$BINDIR/psql" -h "$PGDIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
  -c "CREATE ROLE $DBUSER LOGIN CREATEDB CREATEROLE PASSWORD '$PASSWORD'" \
  -c "CREATE DATABASE $DBNAME OWNER $DBUSER"

PID="$(head -1 "$PGDIR/data/postmaster.pid")"
echo "postgres.sh: PostgreSQL ready on 127.0.0.1:$PORT (pid $PID, data $PGDIR)"
echo "export OMICSTWIN_TEST_PG_URL=postgresql+psycopg://$DBUSER:$PASSWORD@127.0.0.1:$PORT/$DBNAME" \
  "OMICSTWIN_TEST_PG_PID=$PID OMICSTWIN_TEST_PG_DIR=$PGDIR" >&3
