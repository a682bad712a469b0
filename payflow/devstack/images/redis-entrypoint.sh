#!/bin/sh
# PayFlow's stand-in for the official redis image's docker-entrypoint.sh, for the parts the
# chart uses: options alone (or a .conf file) mean `redis-server`; protected mode is off, as
# the official image builds Redis (the chart sets --requirepass); umask 0077 for the data; then
# exec the command. Started as root, it hands /data to the redis user first.
set -eu

case "${1:-}" in
-* | *.conf) set -- redis-server "$@" ;;
esac

if [ "${1:-}" = redis-server ]; then
	if [ "$(id -u)" = 0 ]; then
		find . \! -user redis -exec chown redis '{}' +
		exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
	fi
	case " $* " in
	*" --protected-mode "*) ;;
	*) set -- "$@" --protected-mode no ;;
	esac
	if [ "$(umask)" = 0022 ]; then
		umask 0077
	fi
fi

exec "$@"
