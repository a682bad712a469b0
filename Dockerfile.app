# syntax=docker/dockerfile:1
# The PayFlow API image: `payflow-app` on port 8080, as user 10001.
#   docker build -f Dockerfile.app -t payflow-app:0.1.0 .
# Dependencies come from requirements/runtime.txt (pip-compile --generate-hashes of pyproject.toml),
# installed as wheels only with their hashes checked; no compiler in either stage.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/payflow
ENV PATH=/opt/payflow/bin:$PATH
WORKDIR /src
COPY requirements/ requirements/
RUN pip install --require-hashes --only-binary=:all: -r requirements/runtime.txt \
 && pip install --require-hashes --only-binary=:all: -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY payflow/ payflow/
COPY app/ app/
COPY operator/ operator/
# The project itself: no dependency resolution (all pinned above), no build isolation.
RUN pip install --no-deps --no-build-isolation . \
 && pip uninstall --yes setuptools wheel pip

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 payflow \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin payflow
COPY --from=build /opt/payflow /opt/payflow
ENV PATH=/opt/payflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes can check runAsNonRoot against the image.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["payflow-app"]
