"""`reviewscore report`: numbers and pictures of a scored output.

Reads the shards of a committed output (as listed by its manifest) in record
batches and folds them into fixed-size counters
(`evaluation.streaming.ScoreCounters`), so memory does not grow with the
number of scored rows. True labels come from a column of the output (carried
from the input) or from a Parquet file joined by review id; only that
id → label map is held in memory.
"""
import dataclasses
import json
import pathlib
from typing import Dict, Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from evaluation import plots
from evaluation.streaming import ClassCounters, ScoreCounters
from runtime.filesystems import missing_filesystem
from schemas import columns as c
from schemas import outputs
from schemas.manifest import ManifestError, RunManifest, read_manifest

_BATCH_ROWS = 65_536
SUMMARY_FILE = "summary.json"


class ReportError(Exception):
  """The output cannot be reported on: missing, incomplete, or bad labels."""


def _manifest(prefix: str) -> RunManifest:
  unreachable = missing_filesystem(outputs.manifest_path(prefix))
  if unreachable:
    raise ReportError(unreachable)
  try:
    return read_manifest(prefix)
  except ManifestError as e:
    raise ReportError(str(e)) from None


def _open(path: str):
  """A seekable reader of `path` on any Beam filesystem, as pyarrow wants."""
  return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _label_map(path: str, id_column: str, label_column: str,
               class_names) -> Dict[str, int]:
  try:
    with _open(path) as f:
      table = pq.read_table(f, columns=[id_column, label_column])
  except Exception as e:  # a missing column or an unreadable file
    raise ReportError(f"{path}: cannot read {id_column!r} and "
                      f"{label_column!r} ({e})") from None
  # Scored ids are strings whatever the input's id type was.
  return dict(zip(pc.cast(table[id_column], pa.string()).to_pylist(),
                  _label_ids(table[label_column], class_names).tolist(), strict=True))


def _label_ids(column, class_names) -> np.ndarray:
  """Class ids (-1 when missing or unknown) from class names, from numbers
  that are the class names (1-5 stars), or from class ids; other numbers
  are refused (a label map used in training, e.g. stars to neg/pos, is
  not applied here)."""
  index = {name: i for i, name in enumerate(class_names)}
  if pa.types.is_dictionary(column.type):  # pandas' categoricals, saved
    column = column.cast(column.type.value_type)
  if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
    return np.asarray([index.get(v, -1) if v is not None else -1
                       for v in column.to_pylist()], np.int64)
  if all(name.lstrip("-").isdigit() for name in class_names):
    return np.asarray([index.get(str(v), -1) if v is not None else -1
                       for v in column.to_pylist()], np.int64)
  # -1 marks an unlabelled row, as nulls do (Hugging Face's datasets).
  ids = np.asarray(pc.fill_null(column, -1).to_numpy(zero_copy_only=False),
                   np.int64)
  outside = (ids < -1) | (ids >= len(class_names))
  if outside.any():
    raise ReportError(
        f"--labels: {ids[outside][0]} is not a class id of this model (0-"
        f"{len(class_names) - 1}: {', '.join(class_names)}); give class "
        "names or ids (a label map used in training, such as star ratings "
        "to neg/pos, is not applied here)")
  return ids


def iter_batches(paths: Iterable[str], columns) -> Iterable[pa.RecordBatch]:
  for path in paths:
    with _open(path) as f:
      yield from pq.ParquetFile(f).iter_batches(batch_size=_BATCH_ROWS,
                                                columns=columns)


def build_report(prefix: str, out_dir, *, labels: Optional[str] = None,
                 labels_id_column: str = c.INPUT_ID,
                 labels_column: str = c.INPUT_LABEL) -> dict:
  """Writes summary.json and PNGs for the scored output at PREFIX.

  `labels` is either the name of a column of the scored output or a Parquet
  file with `labels_id_column` and `labels_column`, joined by review id.
  """
  manifest = _manifest(prefix)
  shards = manifest.scores
  if not shards:
    raise ReportError(f"{prefix}: the manifest lists no score shards")
  gone = [shard for shard, found in zip(shards, FileSystems.match(shards),
                                        strict=True) if not found.metadata_list]
  if gone:
    raise ReportError(f"{prefix}: {len(gone)} score shard(s) the manifest "
                      f"lists are gone (first {gone[0]})")
  with _open(shards[0]) as f:
    schema = pq.read_schema(f)
  metadata = schema.metadata or {}
  class_names = tuple(json.loads(metadata.get(c.METADATA_CLASS_NAMES,
                                              b'["neg", "pos"]')))
  threshold = (float(metadata.get(c.METADATA_THRESHOLD, b"0.5"))
               if len(class_names) == 2 else None)
  names = schema.names
  label_column, label_map = None, None
  if labels:
    if labels in c.SCORED_FIELDS + (c.CLASS_SCORES,):
      raise ReportError(f"--labels {labels!r} is a column the model wrote, "
                        "not true labels: name a carried label column or a "
                        "labels file")
    if labels in names:
      label_column = labels
    elif not missing_filesystem(labels) and FileSystems.exists(labels):
      label_map = _label_map(labels, labels_id_column, labels_column,
                             class_names)
    else:
      raise ReportError(f"--labels {labels!r} is neither a column of the scored "
                        f"output ({', '.join(names)}) nor a Parquet file")
  columns = [c.REVIEW_ID, c.SCORE, c.LABEL_ID] + ([label_column] if label_column else [])
  if threshold is None:
    columns.append(c.CLASS_SCORES)
    counters = ClassCounters(class_names=class_names)
  else:
    counters = ScoreCounters(threshold=threshold, class_names=class_names)
  for batch in iter_batches(shards, columns):
    scores = batch.column(c.SCORE).to_numpy(zero_copy_only=False)
    label_ids = batch.column(c.LABEL_ID).to_numpy(zero_copy_only=False).astype(np.int64)
    if label_column:
      truth = _label_ids(batch.column(label_column), class_names)
    elif label_map is not None:
      truth = np.asarray([label_map.get(i, -1) for i in
                          batch.column(c.REVIEW_ID).to_pylist()], np.int64)
    else:
      truth = None
    if threshold is None:
      class_scores = batch.column(c.CLASS_SCORES).flatten().to_numpy(
          zero_copy_only=False).reshape(len(scores), len(class_names))
      counters.add(scores, label_ids, truth, class_scores)
    else:
      counters.add(scores, label_ids, truth)

  if labels and not counters.labelled:
    raise ReportError(
        f"--labels {labels}: no scored review has a label there" + (
            " (every value is null or -1)" if label_column else
            f" (joined on {c.REVIEW_ID}; the file's ids are read from "
            f"{labels_id_column!r})"))
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  summary = {"prefix": prefix,
             "model": metadata.get(c.METADATA_MODEL_NAME, b"").decode(),
             "model_fingerprint": metadata.get(c.METADATA_MODEL_FINGERPRINT,
                                               b"").decode(),
             "threshold": threshold, "counts": (dataclasses.asdict(manifest.counts)
                                             if manifest.counts else None),
             **counters.summary()}
  plots.label_shares(summary["predicted_label_counts"], out_dir / "label_shares.png")
  if threshold is None:
    labelled = counters.labelled_metrics()
    if labelled:
      plots.confusion_plot(labelled["confusion_matrix"]["rows_true_cols_predicted"],
                           class_names, out_dir / "confusion.png")
      summary["labelled"] = labelled
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary
  edges = np.linspace(0, 1, 51)
  coarse = counters.all_scores_histogram().reshape(50, -1).sum(axis=1)
  per_class = (counters.by_class.reshape(2, 50, -1).sum(axis=2)
               if counters.labelled else None)
  plots.histogram_from_counts(edges, coarse, out_dir / "score_histogram.png",
                              per_class=per_class, threshold=threshold,
                              class_names=class_names)
  labelled = counters.labelled_metrics()
  if labelled:
    fpr, tpr = labelled.pop("_roc")
    reliability = labelled.pop("_reliability")
    plots.roc_from_curve(fpr, tpr, out_dir / "roc.png", auc=labelled["roc_auc"])
    plots.confusion_plot(labelled["confusion_matrix"]["rows_true_cols_predicted"],
                         class_names, out_dir / "confusion.png")
    plots.reliability_from_bins(reliability["mean_score"],
                                reliability["positive_rate"],
                                out_dir / "reliability.png")
    summary["labelled"] = labelled
    summary["reliability"] = reliability
  (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
  return summary


def format_summary(summary: dict) -> str:
  decision = (f"threshold {summary['threshold']}"
              if summary["threshold"] is not None else "likeliest class")
  lines = [f"{summary['rows']:,} scored rows by {summary['model']} "
           f"({decision})"]
  counts = summary.get("counts") or {}
  if counts:
    lines.append(f"read {counts.get('read', '?'):,}, dead-lettered "
                 f"{counts.get('dead_lettered', 0):,}")
  shares = ", ".join(f"{k} {v:.1%}" for k, v in
                     summary["predicted_label_shares"].items())
  lines.append(f"predicted: {shares}; mean score {summary['score_mean']:.3f}")
  labelled = summary.get("labelled")
  if labelled:
    def figure(name):  # ROC AUC is undefined where one class is absent
      value = labelled.get(name)
      return "n/a" if value is None else f"{value:.4f}"
    figures = (f"F1 {figure('f1')}, ROC AUC {figure('roc_auc')}"
               if "roc_auc" in labelled else f"macro F1 {figure('macro_f1')}")
    lines.append(
        f"{labelled['labelled_rows']:,} with true labels: accuracy "
        f"{figure('accuracy')}, {figures}, log loss {figure('log_loss')}")
  return "\n".join(lines)
