#!/usr/bin/env bash
# Start (or stop) a local N-node quorate cluster on loopback, on fixed ports
# for benchmarks and scripts such as failover.py (to just try quorate, run
# `quorate demo`): TLS material from `quorate tls`, node i listens on
# replication 127.0.0.1:(4566+i) and API 127.0.0.1:(4000+i).
#
#   scripts/local-cluster.sh up [N]     # default 3 nodes, data under $BASE
#   scripts/local-cluster.sh down
#   BIN=target/release BASE=/tmp/quorate-cluster
#   REPLICATION_EXTRA='election_timeout_ms = 300'   # extra [replication] lines
#   TOP_EXTRA='worker_threads = 2'                   # extra top-level lines
set -euo pipefail
BIN=${BIN:-target/release}
BASE=${BASE:-/tmp/quorate-cluster}
cmd=${1:-up}
n=${2:-3}

case "$cmd" in
up)
    rm -rf "$BASE" && mkdir -p "$BASE/tls"
    "$BIN/quorate" tls ca --out "$BASE/tls" >/dev/null 2>&1
    peers=""
    for i in $(seq 1 "$n"); do peers="$peers\"127.0.0.1:$((4566 + i))\", "; done
    peers="[${peers%, }]"
    for i in $(seq 1 "$n"); do
        name="node-$i"
        "$BIN/quorate" tls node "$name" --addr 127.0.0.1 --ca-dir "$BASE/tls" --out "$BASE/tls" >/dev/null
        mkdir -p "$BASE/$name"
        cat > "$BASE/$name/quorate.toml" <<CONF
cluster_name = "local"
node_name = "$name"
data_dir = "$BASE/$name/data"
runtime_dir = "$BASE/$name/run"
log_level = "${LOG_LEVEL:-warn}"
${TOP_EXTRA:-}

[api]
listen = "127.0.0.1:$((4000 + i))"

[replication]
listen = "127.0.0.1:$((4566 + i))"
peers = $peers
${REPLICATION_EXTRA:-}

[tls]
ca = "$BASE/tls/ca.pem"
cert = "$BASE/tls/$name.pem"
key = "$BASE/tls/$name.key"
CONF
        extra=""
        [ "$i" = 1 ] && extra="--bootstrap"
        "$BIN/quorated" --config "$BASE/$name/quorate.toml" $extra >"$BASE/$name/quorated.log" 2>&1 &
        echo $! >"$BASE/$name/pid"
        [ "$i" = 1 ] && sleep 1
    done
    for i in $(seq 1 "$n"); do
        ready=""
        for _ in $(seq 1 200); do
            curl -sf "127.0.0.1:$((4000 + i))/readyz" >/dev/null && ready=1 && break
            kill -0 "$(cat "$BASE/node-$i/pid")" 2>/dev/null || break
            sleep 0.1
        done
        if [ -z "$ready" ]; then
            echo "node-$i did not become ready; its log:" >&2
            tail -n 20 "$BASE/node-$i/quorated.log" >&2
            exit 1
        fi
    done
    "$BIN/quorate" --config "$BASE/node-1/quorate.toml" --show-cluster-status
    ;;
down)
    for pidfile in "$BASE"/node-*/pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    # A graceful stop leaves the membership first: wait for every node.
    for pidfile in "$BASE"/node-*/pid; do
        [ -f "$pidfile" ] || continue
        for _ in $(seq 1 300); do
            kill -0 "$(cat "$pidfile")" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$pidfile"
    done
    ;;
*)
    echo "usage: $0 up [N] | down" >&2
    exit 2
    ;;
esac
