# One image for every service of docker-compose.yml: api, worker, simulator, trainer, grader.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TINYSTORIES_HOME=/data

WORKDIR /app

# The CPU build of the pinned torch first, from PyTorch's index: the default wheel from PyPI
# drags in several GB of CUDA libraries the containers never use.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md alembic.ini ./
COPY vocab ./vocab
COPY generator ./generator
COPY service ./service
COPY trainer ./trainer
COPY grader ./grader
COPY tinystories ./tinystories
COPY migrations ./migrations
RUN pip install . \
    && useradd --create-home --uid 1000 tinystories \
    && mkdir -p /data /export /models /reports \
    && chown tinystories /data /export /models /reports

USER tinystories
EXPOSE 8000
CMD ["tinystories", "serve", "--host", "0.0.0.0", "--port", "8000"]
