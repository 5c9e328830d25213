"""The scoring pipeline's graph: reviews → validate → tokenize →
RunInference → Parquet, and a commit that writes the manifest last.

`build_pipeline` wires the labelled steps (runners' UIs read them); the
functions and DoFns above it run on the workers.
"""
import logging
import time

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from pipeline import progress, records
from pipeline.commit import Commit, OutputPaths, write_shards
from pipeline.dead_letters import DEAD, FormatDeadLetter, error_detail
from pipeline.length_sort import SortByLengthInWaves
from pipeline.model_handler import TokenIdsModelHandler
from pipeline.options import ScoreOptions
from pipeline.plan import InputPlan
from pipeline.read import ReadReviews, Validate
from pipeline.tokenize import TokenizeBatch
from schemas import arrow as schema_lib
from schemas import columns as c
from schemas import model_dir as contract
from schemas.manifest import RunManifest
from schemas.model_dir import ModelCard


def _format_score(result, *, class_names, fingerprint, carried):
  """PredictionResult → one row of schemas.scored_schema()."""
  record, inference = result.example, result.inference
  label_id = int(inference[contract.OUTPUT_LABEL_ID])
  row = {c.REVIEW_ID: record[records.ID],
         c.SCORE: inference[contract.OUTPUT_PROBABILITY],
         c.LABEL_NAME: class_names[label_id], c.LABEL_ID: label_id,
         c.MODEL_FINGERPRINT: fingerprint, c.SOURCE_FILE: record[records.SOURCE]}
  if contract.OUTPUT_PROBABILITIES in inference:
    row[c.CLASS_SCORES] = inference[contract.OUTPUT_PROBABILITIES]
  for name in carried:
    row[name] = record[records.CARRIED].get(name)
  return row


def _failed_batch_letters(failure):
  """RunInference's (batch, exception) dead letters → one per review."""
  batch, error = failure
  detail = error_detail(error)
  for record in batch:
    yield records.dead(record, c.REASON_INFERENCE_FAILED, detail)




class _QuietBucketKeyWarning(logging.Filter):
  """Drops Beam's warning that the bucketed batching key may not be
  deterministic: Beam's own WithLengthBucketKey keys by (worker uuid str,
  bucket int), which FastPrimitivesCoder encodes deterministically; the
  warning only means the key has no type hint, and it would greet every run.
  """

  def filter(self, record):
    message = record.getMessage()
    return not (message.startswith("Key coder")
                and "_StatefulBatchElementsDoFn" in message)


logging.getLogger("apache_beam.transforms.core").addFilter(
    _QuietBucketKeyWarning())


class _CountScored(beam.DoFn):
  """Counts scored rows; logs this worker's first scored review (the sign
  that the whole path works), and its progress (`pipeline.progress`)."""

  def __init__(self, expected: progress.Expected):
    self._expected = expected

  def setup(self):
    self._scored = beam.metrics.Metrics.counter("reviewscore", "scored")
    self._count, self._start = 0, time.monotonic()

  def process(self, row):
    self._scored.inc()
    self._count += 1
    if self._count == 1:
      progress.progress_log.info(
          "first review scored by this worker (%.1f s after it set up)",
          time.monotonic() - self._start)
    progress.record_done(self._expected)
    yield row


def build_pipeline(p: beam.Pipeline, *, plan: InputPlan,
                   card: ModelCard, handler: TokenIdsModelHandler,
                   paths: OutputPaths, opts: ScoreOptions,
                     manifest: RunManifest, expected: progress.Expected,
                   sort_wave_size: int = 0, increment=None) -> None:
  """Adds the scoring steps to `p` (labelled, so runners' UIs read well)."""
  max_bytes = opts.max_review_bytes
  raw = p | "Read" >> ReadReviews(plan, max_bytes=max_bytes)
  valid = raw | "Validate" >> beam.ParDo(Validate(
      max_bytes=max_bytes, run_id=expected.run_id)).with_outputs(
          DEAD, main="valid")
  tokenized = (
      valid.valid
      # Tokenizing a batch at a time amortises the tokenizer's call.
      | "BatchForTokenize" >> beam.BatchElements(
          min_batch_size=1, max_batch_size=opts.tokenize_batch_size)
      | "Tokenize" >> beam.ParDo(TokenizeBatch(handler.worker_model))
      .with_outputs(DEAD, main="tokens"))
  tokens = tokenized.tokens
  if sort_wave_size:
    tokens = tokens | "SortByLength" >> beam.ParDo(SortByLengthInWaves(
        sort_wave_size, first_wave=opts.max_batch_size))
  results, failed = (tokens
                     | "RunInference" >> RunInference(handler)
                     .with_exception_handling())
  scores = (results
            | "FormatScores" >> beam.Map(
                _format_score, class_names=list(card.class_names),
                fingerprint=card.model_fingerprint,
                carried=plan.carried_names)
            | "CountScored" >> beam.ParDo(_CountScored(expected)))
  inference_dead = (failed.failed_inferences
                    | "InferenceDeadLetters" >> beam.FlatMap(
                        _failed_batch_letters))
  dead = ((valid[DEAD], tokenized[DEAD], inference_dead)
          | "AllDeadLetters" >> beam.Flatten()
          | "FormatDeadLetters" >> beam.ParDo(FormatDeadLetter(expected)))

  metadata = schema_lib.scored_schema_metadata(
      model_name=card.model_name, model_fingerprint=card.model_fingerprint,
      threshold=card.threshold, class_names=card.class_names)
  scored_schema = schema_lib.scored_schema(
      plan.carried_fields, metadata, class_count=len(card.class_names))
  score_files = write_shards(scores, paths.staged_scores, scored_schema,
                             opts.num_shards, "WriteScores")
  error_files = write_shards(dead, paths.staged_errors,
                             schema_lib.dead_letter_schema(), 1,
                             "WriteDeadLetters")

  # Which precision the workers chose (auto decides on each worker).
  precisions = (results
                | "Precisions" >> beam.Map(lambda r: (r.inference["precision"],
                                                      r.inference["precision_why"]))
                | "DistinctPrecisions" >> beam.Distinct())
  count = beam.combiners.Count
  n_read = raw | "CountRead" >> count.Globally()
  n_scored = scores | "CountScores" >> count.Globally()
  n_dead = dead | "CountDeadLetters" >> count.Globally()
  reasons = (dead | "Reasons" >> beam.Map(lambda row: row[c.ERROR_REASON])
             | "CountReasons" >> count.PerElement())
  side = beam.pvalue
  _ = (p
       | "CommitTrigger" >> beam.Create([None])
       | "Commit" >> beam.ParDo(
           Commit(paths, manifest, increment=increment),
           side.AsList(score_files),
           side.AsList(error_files), side.AsSingleton(n_read),
           side.AsSingleton(n_scored), side.AsSingleton(n_dead),
           side.AsDict(reasons), side.AsList(precisions)))
