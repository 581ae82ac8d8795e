#!/usr/bin/env bash
# Make sure the Redis the tests use (CURVEDIT_TEST_REDIS_URL, default redis://127.0.0.1:6379) answers;
# start a local, non-persistent server if nothing listens there.
set -euo pipefail
url=${CURVEDIT_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
hostport=${url#redis://}; hostport=${hostport%%/*}
host=${hostport%%:*}; port=${hostport##*:}
if .venv/bin/python - "$host" "$port" <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); s.sendall(b"PING\r\n"); ok = s.recv(16).startswith(b"+PONG")
except OSError:
    ok = False
sys.exit(0 if ok else 1)
PY
then exit 0; fi
server=$(command -v redis-server || echo .venv/bin/redis-server)
echo "starting $server on $host:$port"
"$server" --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no
sleep 1
