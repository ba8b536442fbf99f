# Images for docker-compose.yml, one target each:
#   service    api, worker, simulator (no torch)
#   train      trainer and grader jobs on CPU (the pinned CPU build of torch)
#   train-gpu  the trainer on an NVIDIA GPU (the same torch version's CUDA build)
# Sizes are measured in benchmarks/RESULTS.md ("Images").

FROM python:3.11-slim AS python
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TINYSTORIES_HOME=/data
WORKDIR /app
RUN useradd --create-home --uid 1000 tinystories \
    && mkdir -p /data /export /models /reports \
    && chown tinystories /data /export /models /reports

FROM python AS source
COPY pyproject.toml README.md alembic.ini ./
COPY vocab ./vocab
COPY generator ./generator
COPY service ./service
COPY trainer ./trainer
COPY grader ./grader
COPY tinystories ./tinystories
COPY migrations ./migrations

FROM python AS train
# The CPU build first, from PyTorch's index: PyPI's default wheel drags in several GB of CUDA
# libraries a CPU container never uses.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY --from=source /app /app
RUN pip install '.[train]'
USER tinystories

FROM python AS train-gpu
# torch.compile's Triton kernels are built with the host C compiler at run time: without one,
# compile fails and training falls back to eager (2.6-2.8x slower on an H100).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
# PyPI's wheel of the same version is the CUDA build.
RUN pip install torch==2.13.0
COPY --from=source /app /app
RUN pip install '.[train]'
USER tinystories

# Last, so a plain `docker build .` gives the service image.
FROM python AS service
COPY --from=source /app /app
RUN pip install .
USER tinystories
EXPOSE 8000
CMD ["tinystories", "serve", "--host", "0.0.0.0", "--port", "8000"]
