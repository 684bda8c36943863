# The orchestrator image: one image for the worker, beat and Flower (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# bubblewrap contains the `python` node's code (ORCH_PYTHON_SANDBOX=bwrap, the default).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

# Only what the package needs: the build context holds no .dockerignore, and a local .venv
# must stay out of the image. README.m[d] matches nothing (and is skipped) when there is none.
# examples/ is package data (`orchestrator._examples` in pyproject.toml): `pip install .`
# fails without it.
WORKDIR /src
COPY pyproject.toml celeryconfig.py README.m[d] ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY examples ./examples
RUN pip install . \
    && rm -rf /src

# Not root. Its home is the working directory, so celery beat's schedule file and
# ORCH_HOME land somewhere it may write.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin orchestrator
USER orchestrator
WORKDIR /home/orchestrator
ENV ORCH_HOME=/home/orchestrator/.orchestrator
# Made here, as this user: a volume mounted on it (Flower's, in docker-compose.yml) starts
# with this owner.
RUN mkdir -p "$ORCH_HOME"
# The example workflows where the README's commands name them, relative to this directory:
# `docker compose exec worker orchestrator workflows apply examples/workflows/trading`.
COPY --chown=orchestrator:orchestrator examples ./examples

CMD ["orchestrator", "worker"]
