#!/bin/sh
# PayFlow's stand-in for the official postgres image's docker-entrypoint.sh, for the parts the
# chart uses: on an empty PGDATA, initdb with POSTGRES_USER and POSTGRES_PASSWORD, allow
# password logins from any host (POSTGRES_HOST_AUTH_METHOD, scram-sha-256 by default), create
# POSTGRES_DB; then exec the command (`postgres` and its `-c` options). Started as root, it
# hands the data directory to the postgres user first, as the official image does.
set -eu

# `docker run postgres -c fsync=off`: options alone mean the server.
if [ "${1#-}" != "${1:-}" ]; then
	set -- postgres "$@"
fi

if [ "${1:-}" = postgres ]; then
	: "${PGDATA:=/var/lib/postgresql/data}"
	if [ "$(id -u)" = 0 ]; then
		mkdir -p "$PGDATA" /var/run/postgresql
		chown -R postgres:postgres "$PGDATA" /var/run/postgresql
		chmod 700 "$PGDATA"
		exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
	fi
	mkdir -p "$PGDATA"
	chmod 700 "$PGDATA" 2>/dev/null || :

	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
			echo "error: the database is uninitialized and POSTGRES_PASSWORD is not set" >&2
			echo "  (POSTGRES_HOST_AUTH_METHOD=trust allows connections without one)" >&2
			exit 1
		fi
		user="${POSTGRES_USER:-postgres}"
		db="${POSTGRES_DB:-$user}"
		pwfile="$(mktemp)"
		trap 'rm -f "$pwfile"' EXIT
		printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
		# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options
		initdb --username="$user" --pwfile="$pwfile" ${POSTGRES_INITDB_ARGS:-}
		rm -f "$pwfile"
		printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"

		# A server on the Unix socket only, to create the database, as the official image does.
		pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
		if [ "$db" != postgres ]; then
			psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$user" --dbname postgres \
				--port "${PGPORT:-5432}" --set db="$db" <<-'EOSQL'
				CREATE DATABASE :"db";
			EOSQL
		fi
		pg_ctl -D "$PGDATA" -m fast -w stop
		echo "PostgreSQL init process complete; ready for start up."
	fi
fi

exec "$@"
