#!/usr/bin/env bash
# Runs the bench against Hearth on RocksDB, on one process with PostgreSQL, or on three
# processes with PostgreSQL and Redis behind nginx (round-robin), all on loopback and all
# started here from scratch (the README's "On PostgreSQL, one process and three").
#
# Usage: bench_postgres.sh rocks|pg1|pg3     (after `cargo build --workspace --all-targets --locked`;
# a build without --all-targets unifies features differently and recompiles RocksDB)
# Prints the bench's JSON, then the CPU time per message of Hearth and of the stores.
# Needs Debian's postgresql, redis-server and nginx. Ports 18532-18550 on 127.0.0.1.
set -u
mode=${1:?usage: bench_postgres.sh rocks|pg1|pg3}
target=${CARGO_TARGET_DIR:-target}/debug
base=$(mktemp -d /tmp/hearth-bench-XXXXXX)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$base"; as_pg=(runuser -u postgres --); fi
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    [ -d "$base/pg" ] && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$base/pg" -m immediate stop >/dev/null 2>&1
    [ -f "$base/nginx.pid" ] && kill -TERM "$(cat "$base/nginx.pid")"
}
trap cleanup EXIT
if [ "$mode" != rocks ]; then
    "${as_pg[@]}" "$pgbin/initdb" -D "$base/pg" -U hearth --auth=trust -E UTF8 >/dev/null
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$base/pg" -o "-p 18532 -k $base -c listen_addresses=127.0.0.1" \
        -l "$base/pg.log" -w start >/dev/null
    redis-server --port 18533 --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
    pids+=($!)
    sleep 0.5
fi
count=1
[ "$mode" = pg3 ] && count=3
for i in $(seq 1 "$count"); do
    env=(HEARTH_LISTEN__CLIENT=127.0.0.1:$((18540 + i)) HEARTH_RATE_LIMITS__ENABLED=false
         HEARTH_STORAGE__PATH="$base/data$i" HEARTH_MEDIA__PATH="$base/media")
    if [ "$mode" != rocks ]; then
        env+=(HEARTH_STORAGE__BACKEND=postgres HEARTH_REDIS__URL=redis://127.0.0.1:18533/0
              "HEARTH_STORAGE__POSTGRES_URL=host=127.0.0.1 port=18532 user=hearth dbname=postgres")
    fi
    env "${env[@]}" "$target/hearth" >"$base/hearth$i.log" 2>&1 &
    pids+=($!)
    sleep 2
done
url=http://127.0.0.1:18541
if [ "$mode" = pg3 ]; then
    user=""
    [ "$(id -u)" -eq 0 ] && user="user root;"
    cat >"$base/nginx.conf" <<NGINX
$user
worker_processes 2;
pid $base/nginx.pid;
error_log $base/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $base/body; proxy_temp_path $base/proxy;
    fastcgi_temp_path $base/fastcgi; uwsgi_temp_path $base/uwsgi; scgi_temp_path $base/scgi;
    upstream hearth {
        server 127.0.0.1:18541; server 127.0.0.1:18542; server 127.0.0.1:18543;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:18550;
        location / {
            proxy_pass http://hearth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 120s;
            proxy_buffering off;
        }
    }
}
NGINX
    /usr/sbin/nginx -p "$base" -c "$base/nginx.conf"
    url=http://127.0.0.1:18550
    sleep 0.5
fi
# CPU per message: the processor time (user + system) that Hearth, and PostgreSQL's and
# Redis's processes, used over the whole run, over every message the run sent (the throughput
# phase's, the history for the initial syncs and the incremental probes).
hearth_pids=("${pids[@]}")
[ "$mode" != rocks ] && hearth_pids=("${pids[@]:1}")
"$target/bench" --homeserver "$url" --label "$mode" | tee "$base/result.json"
ticks() { for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null; done | awk '{s += $14 + $15} END {print s + 0}'; }
store_pids=()
if [ "$mode" != rocks ]; then
    store_pids=("${pids[0]}")
    postmaster=$(head -1 "$base/pg/postmaster.pid")
    store_pids+=("$postmaster" $(pgrep -P "$postmaster"))
fi
python3 - "$base/result.json" "$(ticks "${hearth_pids[@]}")" "$(ticks "${store_pids[@]}")" "$(getconf CLK_TCK)" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
messages = result["sends"] + result["initial_sync_rooms"] * result["initial_sync_messages_per_room"] + 20
hz = int(sys.argv[4])
hearth = int(sys.argv[2] or 0) / hz
store = int(sys.argv[3] or 0) / hz
print(f"CPU per message: Hearth {hearth / messages * 1000:.2f} ms, PostgreSQL and Redis {store / messages * 1000:.2f} ms ({messages} messages)")
PY
