"""The layout of a scoring run's output, which `report`, analytics and
self-training (`train --pseudo-labels`) read:

    PREFIX-SSSSS-of-NNNNN.parquet          scores, one row per scored review
    PREFIX-errors/part-SSSSS-of-NNNNN.parquet   dead letters
    PREFIX-manifest.json                   written last: the output is complete
"""

SHARD_TEMPLATE = "-SSSSS-of-NNNNN"
SHARD_GLOB = "-?????-of-?????.parquet"
PARQUET_SUFFIX = ".parquet"
ERRORS_SUFFIX = "-errors"
ERRORS_PART = "part"
MANIFEST_SUFFIX = "-manifest.json"


def score_shards_glob(prefix: str) -> str:
  return prefix + SHARD_GLOB


def manifest_path(prefix: str) -> str:
  return prefix + MANIFEST_SUFFIX


def errors_dir(prefix: str) -> str:
  return prefix + ERRORS_SUFFIX
