#!/bin/sh
# Runs INSIDE the image (scripts/build-image.sh copies it to the container's /tmp): the image's
# ENTRYPOINT, given as "$@", with the image's own ENV, against the bundled Kubernetes emulator.
# Checks what a Deployment relies on: the liveness endpoint that GPUVM_LIVENESS turns on answers
# 200 on :8080, and SIGTERM stops the operator cleanly (exit 0) within 15 s.
#
# No Azure is needed: --credential simulator-token never asks for a token over the network, and
# no GpuVm exists, so ARM (a closed port on loopback here) is never called. Run it in a private
# network namespace: it binds 0.0.0.0:8080.
set -eu

KUBE_PORT=18081
say() { echo "liveness: $*"; }
fail() {
    echo "liveness: FAILED: $*" >&2
    for log in /tmp/liveness-kube.log /tmp/liveness-operator.log; do
        [ -f "$log" ] && { echo "--- $log" >&2; tail -n 15 "$log" >&2; }
    done
    exit 1
}
[ "$#" -gt 0 ] || fail "usage: image-smoke-liveness.sh ENTRYPOINT..."
[ -n "${GPUVM_LIVENESS:-}" ] || fail "the image sets no GPUVM_LIVENESS"

crds=$(python3 -c 'from testbed.demo import crd_paths; print(" ".join(map(str, crd_paths())))')
# shellcheck disable=SC2086 # one word per CRD file
gpuvm-operator kube-emulator --port "$KUBE_PORT" --crds $crds >/tmp/liveness-kube.log 2>&1 &
kube=$!
trap 'kill "$kube" 2>/dev/null || true' EXIT
echo simulator-token >/tmp/liveness-token

# wait_for URL SECONDS: until URL answers 200 (any HTTP answer for the emulator's root).
wait_for() {
    python3 - "$1" "$2" <<'EOF'
import sys, time, urllib.error, urllib.request
url, limit = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + limit
while True:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            print(response.status, response.read(300).decode(errors="replace"))
            break
    except urllib.error.HTTPError as e:
        if "/healthz" not in url:
            print(e.code)
            break
        error = f"HTTP {e.code}"
    except OSError as e:
        error = str(e)
    if time.monotonic() > deadline:
        sys.exit(f"no answer from {url} in {limit:.0f} s: {error}")
    time.sleep(0.2)
EOF
}

wait_for "http://127.0.0.1:$KUBE_PORT/version" 20 >/dev/null || fail "the Kubernetes emulator did not start"
"$@" --kube-server "http://127.0.0.1:$KUBE_PORT" --arm-endpoint https://127.0.0.1:9 \
    --credential simulator-token --simulator-token-file /tmp/liveness-token >/tmp/liveness-operator.log 2>&1 &
operator=$!
healthz=$(echo "$GPUVM_LIVENESS" | sed 's#//0\.0\.0\.0:#//127.0.0.1:#')
answer=$(wait_for "$healthz" 30) || fail "no liveness answer: $answer"
case "$answer" in
    200*) say "$healthz -> $answer" ;;
    *) fail "liveness answered: $answer" ;;
esac

peak=$(sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$operator/status" 2>/dev/null || true)
say "operator peak memory (VmHWM) ${peak:-unknown}"
kill -TERM "$operator"
waited=0
while kill -0 "$operator" 2>/dev/null; do
    [ "$waited" -lt 150 ] || { kill -KILL "$operator"; fail "the operator ignored SIGTERM for 15 s"; }
    sleep 0.1
    waited=$((waited + 1))
done
rc=0
wait "$operator" || rc=$?
[ "$rc" = 0 ] || fail "the operator exited $rc after SIGTERM, want 0"
say "SIGTERM: exited 0 after $((waited / 10)).$((waited % 10)) s"
