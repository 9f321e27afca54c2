#!/bin/sh
# Redis for compose.yaml: append-only file on (accepted jobs survive a restart), a password, noeviction
# (a full Redis refuses writes, it does not drop queued jobs), CONFIG/DEBUG/MODULE disabled, as the
# private Redis of `make run`. The password goes into a 0600 file, not onto the command line.
set -eu
: "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
umask 077
conf="$(mktemp)"
cat > "$conf" <<CONF
bind 0.0.0.0
port 6379
protected-mode no
dir /var/lib/redis
appendonly yes
appendfsync everysec
requirepass $REDIS_PASSWORD
maxmemory ${REDIS_MAXMEMORY:-1gb}
maxmemory-policy noeviction
rename-command CONFIG ""
rename-command DEBUG ""
rename-command MODULE ""
CONF
exec redis-server "$conf"
