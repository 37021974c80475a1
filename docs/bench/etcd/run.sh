#!/usr/bin/env bash
# Side by side on one machine: three local raftd nodes (kv plugin) and three
# local etcd members, fsync on, 128 B values, 16 B keys, 10 s per run,
# against the leader, with the client counts given (default: 64 1).
# Needs etcd on PATH (Debian: apt-get install etcd-server) and `make build`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
B=$root/bin
[ -x "$B/raftd" ] || { echo "run.sh: build first (make build)" >&2; exit 1; }
command -v etcd >/dev/null || { echo "run.sh: etcd not found (apt-get install etcd-server)" >&2; exit 1; }
(cd "$here" && go build -o "$B/etcdbench" .)
clients=("$@"); [ ${#clients[@]} -gt 0 ] || clients=(64 1)
D=$(mktemp -d); pids=()
cleanup() { [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
port() { echo $((20000 + RANDOM % 20000)); }

echo "# raftd"
base=$(port)
P="1=127.0.0.1:$((base+1)),2=127.0.0.1:$((base+2)),3=127.0.0.1:$((base+3))"
for i in 1 2 3; do
	"$B/raftd" run --fsm "$B/raftd-fsm-kv" --id $i --data-dir "$D/r$i" --raft-addr 127.0.0.1:$((base+i)) \
		--api-addr 127.0.0.1:$((base+10+i)) --peers "$P" >"$D/r$i.log" 2>&1 &
	pids+=($!)
done
A=127.0.0.1:$((base+11)),127.0.0.1:$((base+12)),127.0.0.1:$((base+13))
for _ in $(seq 100); do "$B/raftd" apply --addr "$A" '{"op":"put","key":"x","value":"y"}' >/dev/null 2>&1 && break; sleep 0.1; done
for c in "${clients[@]}"; do
	"$B/raftd" bench --addr "$A" --clients "$c" --duration 10s --value-size 128 --key-size 16
done
kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true; pids=()

echo "# etcd $(etcd --version | head -1)"
base=$(port)
C="e1=http://127.0.0.1:$((base+1)),e2=http://127.0.0.1:$((base+2)),e3=http://127.0.0.1:$((base+3))"
for i in 1 2 3; do
	etcd --name e$i --data-dir "$D/e$i" --listen-peer-urls http://127.0.0.1:$((base+i)) \
		--initial-advertise-peer-urls http://127.0.0.1:$((base+i)) \
		--listen-client-urls http://127.0.0.1:$((base+10+i)) --advertise-client-urls http://127.0.0.1:$((base+10+i)) \
		--initial-cluster "$C" --initial-cluster-state new --initial-cluster-token bench --log-level error >"$D/e$i.log" 2>&1 &
	pids+=($!)
done
A=127.0.0.1:$((base+11)),127.0.0.1:$((base+12)),127.0.0.1:$((base+13))
for c in "${clients[@]}"; do
	"$B/etcdbench" --addr "$A" --clients "$c" --duration 10s 2>/dev/null
done
