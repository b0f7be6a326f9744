# gpuvm-operator: the container image the Deployment runs.
#
#   ./dev image    builds it for real with buildah and smoke-tests it (scripts/build-image.sh)
#
# Stages:
#   runtime-base  Debian's Python 3.11 and the CA bundle, nothing else: the final image is this
#                 plus one virtual environment, so no compiler, pip or venv tooling ever gets in.
#   deps          build tools in /opt/build; the pinned dependencies (requirements.lock) in the
#                 application venv /opt/gpuvm. Cached until requirements.lock changes.
#   builder       builds the project's wheel, checks it, installs it under /stage.
#   (final)       runtime-base + the deps venv + the project, as user 65532:65532.
# Dependencies and the project are two layers, so a source change rebuilds and ships only the
# project (about a megabyte).
#
# Read-only root filesystem: nothing in the image is written at run time. Bytecode is compiled
# here (unchecked-hash .pyc, valid whatever the file times), PYTHONDONTWRITEBYTECODE stops any
# attempt, and HOME and TMPDIR are /tmp, which the Deployment mounts as an emptyDir.
#
# Pinning. The base is pinned by tag, debian:bookworm-slim. The CI build uses --pull=never with a
# locally made debian:bookworm-slim (no registry is reachable there), so no registry digest can
# be named here; a release pipeline that pulls should pin debian:bookworm-slim@sha256:<digest>.
# Debian package versions are deliberately not pinned (hence the DL3008 ignores below): they are
# whatever the bookworm snapshot plus bookworm-security has at build time. The mirror keeps only
# the current version of a package, so exact pins would break the build at every point release,
# and a rebuild should pick up security fixes. Python packages are pinned exactly:
# requirements.lock for the runtime, the ARGs below for the build tools.

FROM debian:bookworm-slim AS runtime-base
# Debian package versions are left to the snapshot + bookworm-security (see Pinning above).
# No OS time zone files (Debian's tzdata is gone): spec.schedule reads its zones from the pinned
# tzdata wheel (controller/schedule.py), and without /etc/localtime the C library keeps UTC.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 \
 && apt-get purge -y tzdata \
 && rm -rf /etc/localtime /etc/timezone /usr/share/zoneinfo \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log

FROM runtime-base AS deps
ARG PIP_VERSION=26.3
ARG SETUPTOOLS_VERSION=84.2.1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PYTHONDONTWRITEBYTECODE=1
# Debian package versions are left to the snapshot + bookworm-security (see Pinning above).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
# Two environments: /opt/build holds pip and setuptools and never leaves this stage; /opt/gpuvm
# is made without pip and filled from outside with `pip --python`.
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --only-binary=:all: "pip==${PIP_VERSION}" "setuptools==${SETUPTOOLS_VERSION}" \
 && python3 -m venv --without-pip /opt/gpuvm
COPY requirements.lock /tmp/requirements.lock
# --no-deps: exactly the lock, nothing resolved at build time; the builder's `pip check` fails
# if the lock no longer satisfies pyproject.toml (regenerate it: scripts/image-lock.sh).
# Not compiled: kubernetes/aio, an asyncio copy of the whole client (~30 MB of .pyc) that nothing
# here imports; were it imported, Python would compile it in memory, as it may not write here.
RUN /opt/build/bin/pip --python /opt/gpuvm/bin/python install --no-cache-dir --no-compile \
        --only-binary=:all: --no-deps --requirement /tmp/requirements.lock \
 && /opt/gpuvm/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        -x '/kubernetes/aio/' /opt/gpuvm/lib

FROM deps AS builder
WORKDIR /src
# README.m[d]: the readme pyproject.toml names, copied if present (the glob may match nothing).
COPY pyproject.toml README.m[d] ./
# controller/data holds symlinks into deploy/ (the CRDs, the Azure role `check` compares with):
# their targets must be here.
COPY deploy/crds/gpuvms.gpuvm.dev.yaml ./deploy/crds/
COPY deploy/crds/gpuvmclaims.gpuvm.dev.yaml ./deploy/crds/
COPY deploy/azure/gpuvm-power-operator.role.json ./deploy/azure/
COPY controller ./controller
# The wheel is checked for the data files' real content (not dangling links), installed into the
# build's copy of the venv for `pip check` and a start-up test, and installed again under /stage
# for the final image, where it lands in a layer of its own.
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
 && /opt/build/bin/pip --python /opt/gpuvm/bin/python install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \
 && /opt/build/bin/pip --python /opt/gpuvm/bin/python check \
 && data=/opt/gpuvm/lib/python3.11/site-packages/controller/data \
 && test ! -L "$data/gpuvms.gpuvm.dev.yaml" && cmp "$data/gpuvms.gpuvm.dev.yaml" deploy/crds/gpuvms.gpuvm.dev.yaml \
 && test ! -L "$data/gpuvmclaims.gpuvm.dev.yaml" \
 && cmp "$data/gpuvmclaims.gpuvm.dev.yaml" deploy/crds/gpuvmclaims.gpuvm.dev.yaml \
 && test ! -L "$data/gpuvm-power-operator.role.json" \
 && cmp "$data/gpuvm-power-operator.role.json" deploy/azure/gpuvm-power-operator.role.json \
 && /opt/gpuvm/bin/gpuvm-operator --help >/dev/null \
 && /opt/build/bin/pip --python /opt/gpuvm/bin/python install --no-cache-dir --no-index --no-deps --no-compile \
        --ignore-installed --root /stage /tmp/wheels/*.whl \
 && test -x /stage/opt/gpuvm/bin/gpuvm-operator && test -x /stage/opt/gpuvm/bin/kubectl-gpuvm \
 && /opt/gpuvm/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash -s /stage -p / /stage/opt/gpuvm/lib

FROM runtime-base
# A numeric user with a passwd entry (tools that look the name up find one), no home of its own
# and no login. Written directly: useradd would warn that 65532 is above its UID_MAX (60000).
RUN echo 'nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'nonroot:x:65532:' >>/etc/group
COPY --from=deps /opt/gpuvm /opt/gpuvm
COPY --from=builder /stage/opt/gpuvm /opt/gpuvm
# GPUVM_LIVENESS: the liveness endpoint is on unless the Deployment sets it to "" (flags and
# args can be given freely without losing it); the port is the one EXPOSEd.
ENV PATH=/opt/gpuvm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    GPUVM_LIVENESS=http://0.0.0.0:8080/healthz
USER 65532:65532
# 8080: kopf liveness (/healthz); 9090: Prometheus metrics when GPUVM_METRICS_PORT is set.
EXPOSE 8080 9090
# org.opencontainers.image.version and .revision are given by the build command
# (buildah build --label ...; scripts/build-image.sh): as ARGs here they would be stale, because
# buildah's layer cache ignores a changed build argument that only a LABEL uses.
LABEL org.opencontainers.image.title="gpuvm-operator" \
      org.opencontainers.image.description="Kubernetes operator that switches Azure GPU VMs on and off from a GpuVm custom resource" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
ENTRYPOINT ["gpuvm-operator", "run"]
