# GPU worker image for the scoring pipeline on Dataflow (Runner v2) or any
# portable runner, on Beam's SDK container conventions: the Beam boot binary
# from the matching apache/beam SDK image is the entrypoint, and Python,
# apache-beam and this package live in the image (no install at start-up).
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/reviewscore/worker:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/reviewscore/worker:0.1.0
#
# The launcher must use the same Python (3.11) and apache-beam (2.77.0) as the
# image. docs/scaling.md has the pipeline options that go with it. The
# build context is the repository less what .dockerignore names (data,
# models, tests, benchmarks...).

# TensorFlow 2.21 with CUDA/cuDNN. Its Python must be the SDK image's (3.11):
# the first RUN below fails the build otherwise; pass another base with
# --build-arg BASE=... (e.g. nvidia/cuda:12.x-cudnn-runtime + python3.11 and
# `pip install tensorflow[and-cuda]`) if this tag's Python differs.
ARG BASE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE}

# Beam's boot binary and launcher tooling, from the SDK image of the same
# Beam release: it starts the SDK harness the runner asks for.
COPY --from=apache/beam_python3.11_sdk:2.77.0 /opt/apache/beam /opt/apache/beam

# Workers never pip-install at start-up: everything is installed below.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_USE_LEGACY_KERAS=1

WORKDIR /opt/reviewscore
# Dependencies first, from setup.py alone (a cached layer: with no package
# beside it, it installs what the package needs and nothing of its own),
# then the package as setup.py ships it, from the build context that
# .dockerignore leaves (tests/test_worker_image.py holds the two together).
COPY setup.py ./
RUN python -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version" \
 && python -m pip install --upgrade "pip<25" \
 && python -m pip install ".[gcp]" \
 && python -m pip uninstall -y reviewscore
COPY . .
RUN python -m pip install --no-deps . \
 && cd / && python -c "import apache_beam, tensorflow, tensorflow_text, onnxruntime, pipeline.run; \
print('beam', apache_beam.__version__, 'tf', tensorflow.__version__)"

ENTRYPOINT ["/opt/apache/beam/boot"]
