"""reviewscore: fine-tune BERT on labelled reviews, score archives with Beam.

This file is also what Dataflow workers install (`--setup_file ./setup.py`),
so `install_requires` holds runtime dependencies only; tools for tests,
parity checks and benchmarks are extras.
"""
import setuptools

RUNTIME = [
    "tensorflow>=2.21,<2.22",
    "tensorflow-text>=2.21,<2.22",
    "tf-keras>=2.21,<2.22",
    "tensorflow-hub>=0.16,<0.17",
    "apache-beam>=2.77,<2.78",
    "pyarrow>=17,<27",
    "click>=8.1,<9",
    "numpy>=1.26,<3",
    "safetensors>=0.4,<1",
    "matplotlib>=3.8,<4",
    # A model's copies: ONNX Runtime computes the int8 one, OpenVINO the
    # float32 one (and the int8 copies of models made before 2026-12-08).
    "onnxruntime>=1.20,<2",
    "openvino>=2026.4,<2026.5",
    # The tokenizer copy: a worker computing with a copy loads no TensorFlow.
    "tokenizers>=0.20,<1",
    # tensorflow-hub 0.16 imports pkg_resources, which setuptools 80+ dropped.
    "setuptools>=65,<80",
]

# What makes the int8 copy (training, `optimize`): the SavedModel's graph
# converted to ONNX, then quantized by ONNX Runtime. Workers never need it.
INT8 = ["tf2onnx>=1.17,<1.18", "onnx>=1.17,<2"]
AWS = ["apache-beam[aws]>=2.77,<2.78"]
GCP = ["apache-beam[gcp]>=2.77,<2.78"]
# Tests read outputs the way analytics users do, and run the pipeline against
# an S3-compatible server (moto's) and a Cloud Storage emulator of their own
# on 127.0.0.1, through Beam's filesystems for both clouds (the gcp extra adds
# about 320 MB and 25 s to an install).
# SciPy: a library that looks for PyTorch as it imports, which the tests
# import with PyTorch kept out (test_startup).
TEST = INT8 + ["pytest>=8", "scipy>=1.11", "pytest-xdist>=3.6", "duckdb>=1.0",
               "pandas>=2.2", "ruff>=0.6", "moto[server]>=5.1,<6",
               "gcp-storage-emulator>=2026.7.19,<2027"] + AWS + GCP
# Reference implementations compared against ours (never runtime deps):
# torch 2.13.0's CPU wheel lies on this project's machines.
PARITY = ["torch==2.13.0", "transformers>=4.44,<6"]
# benchmarks/peers.py's ONNX Runtime peers; int8_runtime.py's OpenVINO
# int8 candidates (NNCF).
BENCHMARK = PARITY + ["scikit-learn>=1.5", "nncf>=3.4,<3.5"]

setuptools.setup(
    name="reviewscore",
    version="0.1.0",
    description="Fine-tune BERT on labelled reviews and score review archives "
    "with Apache Beam",
    python_requires=">=3.10",
    packages=setuptools.find_packages(
        include=["schemas", "schemas.*", "evaluation", "evaluation.*", "train",
                 "train.*", "pipeline", "pipeline.*", "reviewscore",
                 "reviewscore.*", "runtime", "runtime.*", "engines",
                 "engines.*"]),
    install_requires=RUNTIME,
    extras_require={
        # Beam's filesystems and runners for Google Cloud (gs://, Dataflow)
        # and AWS (s3://), for launchers and workers alike.
        "gcp": GCP,
        "aws": AWS,
        "int8": INT8,
        "test": TEST,
        "parity": TEST + PARITY,
        "benchmark": TEST + BENCHMARK,
    },
    entry_points={"console_scripts": ["reviewscore=reviewscore.cli:main"]},
)
