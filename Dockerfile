# cardio-kedro as a container: the wheel `kedro package` builds, installed on the hash-checked lock file, run as
# a non-root user. The build steps are docker/install.sh, which CI also runs into a clean virtual environment.
#
#   make package && docker build -t cardio-kedro .
#   docker run --rm -v "$PWD/work:/work" cardio-kedro --pipelines=demo          # data/ and mlflow.db in ./work
#   docker run --rm -v "$PWD/work:/work" -v /data/films:/films:ro cardio-kedro --pipelines=inference \
#     --params=images_dir=/films
# NVIDIA GPUs (JAX with its CUDA 12 wheels; run with --gpus all):
#   docker build --build-arg LOCK=requirements-gpu.lock --build-arg KERAS_BACKEND=jax -t cardio-kedro:gpu .
FROM python:3.11-slim

ARG LOCK=requirements.lock
ARG KERAS_BACKEND=tensorflow
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEDRO_DISABLE_TELEMETRY=true \
    KERAS_BACKEND=${KERAS_BACKEND} \
    PATH=/opt/venv/bin:${PATH}

WORKDIR /tmp/build
COPY requirements.lock requirements-gpu.lock ./
COPY docker/install.sh ./docker/install.sh
COPY dist/ ./dist/
RUN bash docker/install.sh /opt/venv /opt/cardio "${LOCK}" \
    && useradd --create-home --uid 1000 cardio \
    && mkdir -p /work \
    && chown cardio /work \
    && rm -rf /tmp/build

# the project folder of every run: data/ and mlflow.db live here, on a mounted volume
WORKDIR /work
VOLUME ["/work"]
USER 1000

ENTRYPOINT ["python", "-m", "cardio_kedro", "--conf-source=/opt/cardio/conf-cardio_kedro.tar.gz"]
CMD ["--pipelines=demo"]
