# apikeys-bot: the server (python -m bot) and the apikeys command line, in one image.
#
#   docker build -t apikeys-bot .
#   docker run -p 3000:3000 -v apikeys:/var/lib/apikeys apikeys-bot          # SQLite in the volume
#   docker compose up                                                         # PostgreSQL, nginx: compose.yaml
#
# Two stages: the first installs the project and its dependencies into a virtualenv (all of them
# ship wheels: no compiler is needed, and none reaches the final image); the second is the slim
# Python base, that virtualenv and a user without privileges. tests/test_container.py runs the
# install steps below (the same COPY sources, a fresh virtualenv) and checks this file's promises.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY storage ./storage
COPY bot ./bot
RUN python -m venv /opt/apikeys \
 && /opt/apikeys/bin/pip install . \
 && /opt/apikeys/bin/pip uninstall -y pip \
 && find /opt/apikeys -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="apikeys-bot" \
      org.opencontainers.image.description="Manage, verify and revoke API keys from Slack, a key API and a command line"
RUN groupadd --system --gid 10001 apikeys \
 && useradd --system --uid 10001 --gid apikeys --home-dir /var/lib/apikeys --create-home --shell /usr/sbin/nologin apikeys
COPY --from=build /opt/apikeys /opt/apikeys
ENV PATH=/opt/apikeys/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATABASE_URL=sqlite:////var/lib/apikeys/apikeys.db
USER apikeys:apikeys
WORKDIR /var/lib/apikeys
VOLUME ["/var/lib/apikeys"]
EXPOSE 3000
# 200 only when keys can be checked and revoked (GET /healthz): an orchestrator restarts a replica that cannot.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=2).status == 200 else 1)"]
CMD ["python", "-m", "bot"]
