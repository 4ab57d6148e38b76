#!/usr/bin/env bash
# Runs vet, the whole test suite with the race detector, and the
# allocation tests without it. The Redis store's
# tests need redis-server: it is installed from Debian's packages when missing,
# and one private instance is started on a free loopback port for the suite
# (tests that kill or reconfigure Redis start their own). Everything this
# script starts, it stops by pid.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need: redis-server for the Redis store, nginx
# for the auth_request test of deploy/nginx (/usr/sbin/nginx, which is not
# on every PATH), chromium to render the HTML bench report. Installed only
# when missing; apt's lists are fetched once.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing+=(nginx-light)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
	echo "test: installing ${missing[*]}" >&2
	if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
	$SUDO apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
	|| shuf -i 20000-60000 -n 1)
redis_dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
	--dir "$redis_dir" --daemonize no --loglevel warning >"$redis_dir/log" 2>&1 &
redis_pid=$!
cleanup() {
	kill "$redis_pid" 2>/dev/null || true
	wait "$redis_pid" 2>/dev/null || true
	rm -rf "$redis_dir"
}
trap cleanup EXIT INT TERM
for _ in $(seq 1 100); do
	if redis-cli -p "$port" ping >/dev/null 2>&1; then break; fi
	sleep 0.05
done
export RATELIMIT_TEST_REDIS_URL="redis://127.0.0.1:$port/0"

# --- Alert rules (deploy/prometheus) and the dashboard's browser test ---
# promtool, from Debian's prometheus package, checks the alert rules and
# runs their unit tests; the browser test (cmd/ratelimitd, TestOperatorView)
# drives chromium, installed above, and leaves its screenshots in
# $RATELIMIT_TEST_ARTIFACTS (default: test-artifacts/).
if ! command -v promtool >/dev/null 2>&1; then
	echo "test: installing prometheus (for promtool)" >&2
	if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
	$SUDO apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts_test.yml)
export RATELIMIT_TEST_ARTIFACTS="${RATELIMIT_TEST_ARTIFACTS:-$PWD/test-artifacts}"
# --- end of the alert rules block ---

go vet ./...
go test -race -timeout 15m ./...
# The race detector allocates, so the allocation tests skip under -race:
# they run here, without it, in the packages that have them.
mapfile -t alloc_pkgs < <(grep -rl --include='*_test.go' 'testing.AllocsPerRun' . | xargs -n1 dirname | sort -u)
if [ "${#alloc_pkgs[@]}" -gt 0 ]; then
	go test -count=1 -run 'Alloc' "${alloc_pkgs[@]}"
fi
