# One image for the projector, the API and the demo simulator.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY readmodel ./readmodel
COPY projector ./projector
COPY api ./api
COPY standin ./standin
COPY demo ./demo
RUN pip install --no-cache-dir '.[demo]'
USER nobody
CMD ["projector", "run"]
