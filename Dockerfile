# The suanli image: the operator (`suanli run`) and the GPU exporter (`suanli exporter`) in one.
#
#   docker build -t ghcr.io/suanli/suanli:0.1.0 .
#
# Two stages: the first builds and installs the package into a virtual environment, the second
# copies only that environment onto a slim Python base. No compiler or pip cache ships, and the
# process runs as an unprivileged user with bytecode compiled in advance, so the Helm chart can
# mount the root filesystem read-only. NVML (libnvidia-ml.so.1) is not in the image: on GPU
# nodes the NVIDIA container runtime injects the host driver's library.
#
# PYTHON_IMAGE may be any Debian-based image with python3 (3.11+) and its venv module: where no
# registry can be reached, `suanli dev up --provider kind` builds one from Debian packages
# (python3, python3-venv) and passes it here.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/suanli
WORKDIR /src
# The dependencies first, in a layer of their own, so that a change to the source reuses it.
COPY pyproject.toml ./
RUN /opt/suanli/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/suanli/bin/pip install -r requirements.txt
# Only what the package build reads (see .dockerignore): metadata, then the source.
COPY README.md ./
COPY operator ./operator
RUN /opt/suanli/bin/pip install --no-deps . \
    && /opt/suanli/bin/python -m compileall -q /opt/suanli/lib \
    && /opt/suanli/bin/suanli --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="suanli" \
      org.opencontainers.image.description="Federate GPU computing centers on Kubernetes: voucher admission, dispatch, GPU exporter" \
      org.opencontainers.image.source="https://github.com/suanli/suanli" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/suanli /opt/suanli
# A named account for the uid the chart runs as: Kopf asks for the user's name at start-up
# (getpass.getuser), which fails for a uid without a passwd entry.
RUN groupadd --system --gid 65532 suanli \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin suanli
ENV PATH=/opt/suanli/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The uid and gid the chart's securityContext names; no home directory or shell needed.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["suanli"]
CMD ["run"]
