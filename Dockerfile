# One image for the projector and the API (`projector run` / `livestatus-api`); it carries the
# runtime wheel and its locked dependencies only. `--target simulator` adds the demo traffic
# simulator (compose's `simulator` profile).

# The wheel, built from the packages that run in production.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY readmodel ./readmodel
COPY projector ./projector
COPY api ./api
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 LOG_FORMAT=json
# Dependencies first, from the lock (hash-checked): this layer is rebuilt only when the lock changes.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock && rm /tmp/requirements.lock
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin livestatus
USER 10001:10001
# The API (inside a container it listens on every interface; compose publishes it on loopback).
ENV API_HOST=0.0.0.0 API_PORT=8000
EXPOSE 8000
# Liveness of the API; compose gives the projector its own (`projector check`).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=6 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('API_PORT', '8000')}/healthz\", timeout=4)"]
CMD ["livestatus-api"]

# Demo traffic for a test stack: the simulator writes tasks into MongoDB (pymongo only).
FROM runtime AS simulator
WORKDIR /app
COPY demo ./demo
HEALTHCHECK NONE
CMD ["python", "-m", "demo.simulator_cli"]

# The default target: the production image.
FROM runtime
