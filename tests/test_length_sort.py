"""Length-sorted waves: batches of similar lengths with no shuffle, so a
worker's memory does not follow the input's size."""
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import apache_beam as beam
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.transforms import window

from pipeline.length_sort import SortByLengthInWaves
from pipeline.run import plan_run, run
from schemas import columns as c


def _records(lengths):
  return [{"id": f"r{i}", "tokens": np.zeros(n, np.int32)}
          for i, n in enumerate(lengths)]


def _waves(dofn, records):
  """Runs the DoFn over one bundle; returns what it emitted after each
  input, and the records left for finish_bundle."""
  dofn.start_bundle()
  emitted = []
  for record in records:
    emitted.append(list(dofn.process(record, window.GlobalWindow())))
  tail = [value.value for value in dofn.finish_bundle()]
  return emitted, tail


def test_waves_double_alternate_and_hold_at_most_one_wave():
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 500, 100)
  records = _records(lengths)
  emitted, tail = _waves(SortByLengthInWaves(16, first_wave=4), records)
  waves = [wave for wave in emitted if wave] + [tail]
  # Every review once; waves of 4, 8, 16, 16, ... and the rest at the end.
  assert sorted(r["id"] for w in waves for r in w) == sorted(
      r["id"] for r in records)
  assert [len(w) for w in waves] == [4, 8, 16, 16, 16, 16, 16, 8]
  for number, wave in enumerate(waves):
    counts = [len(r["tokens"]) for r in wave]
    assert counts == sorted(counts, reverse=number % 2 == 1), number
    # A wave is the reviews that arrived since the previous one.
    first = sum(len(w) for w in waves[:number])
    assert {r["id"] for r in wave} == {
        r["id"] for r in records[first:first + len(wave)]}


def test_records_of_another_window_are_refused():
  """Catches records of a fixed window flushed at the bundle's end into the
  global window (their window silently lost)."""
  with pytest.raises(Exception, match="global window only"):
    with beam.Pipeline() as p:
      _ = (p | beam.Create(_records([3, 1, 2]))
           | beam.WindowInto(window.FixedWindows(60))
           | beam.ParDo(SortByLengthInWaves(4, first_wave=2)))


def test_each_bundle_starts_afresh():
  """Catches wave size or direction carried over from the last bundle:
  three waves leave the direction descending and the size at its limit."""
  dofn = SortByLengthInWaves(8, first_wave=2)
  for _ in range(2):
    emitted, tail = _waves(dofn, _records([5, 1, 3, 9, 2, 7, 8, 6]))
    assert [[len(r["tokens"]) for r in e] for e in emitted if e] == [
        [1, 5], [9, 7, 3, 2]]
    assert [len(r["tokens"]) for r in tail] == [6, 8]


def _sentences(imdb_dir, n, seed=0):
  """Real review sentences, as varied in length as a review site's."""
  table = pq.read_table(imdb_dir / "test.parquet", columns=["text"])
  sentences = []
  for text in table["text"].to_pylist()[:400]:
    sentences.extend(s.strip() for s in text.replace("<br />", " ").split(". ")
                     if len(s.split()) >= 2)
  random.Random(seed).shuffle(sentences)
  return pa.table({c.INPUT_ID: [f"s{i}" for i in range(n)],
                   c.INPUT_TEXT: sentences[:n]})


def _stateful_steps(pipeline):
  proto = pipeline.to_runner_api()
  names = []
  for transform in proto.components.transforms.values():
    if transform.spec.urn != common_urns.primitives.PAR_DO.urn:
      continue
    payload = beam_runner_api_pb2.ParDoPayload.FromString(
        transform.spec.payload)
    if payload.state_specs or payload.timer_family_specs:
      names.append(transform.unique_name)
  return names


def test_default_scoring_sorts_in_waves_with_no_state(tiny_model_dir,
                                                      imdb_dir, tmp_path):
  data = tmp_path / "sentences.parquet"
  pq.write_table(_sentences(imdb_dir, 600), data)
  common = [f"--input={data}", f"--model={tiny_model_dir}",
            "--precision=float32"]

  def score(name, *flags):
    return run(common + [f"--output={tmp_path / name}", *flags],
               save_main_session=False, echo=lambda m: None)

  def padding_efficiency(result):
    return result.metrics["tokens_real"] / result.metrics["tokens_padded"]

  waves = score("waves")
  arrival = score("arrival", "--sort-wave-size=0")
  assert waves.counts["scored"] == arrival.counts["scored"] == 600
  # Sorting changes which reviews share a batch, never a score.
  tables = [pq.read_table(r.score_files).sort_by(c.REVIEW_ID)
            for r in (waves, arrival)]
  assert tables[0][c.REVIEW_ID].to_pylist() == tables[1][c.REVIEW_ID].to_pylist()
  np.testing.assert_allclose(tables[0][c.SCORE].to_numpy(),
                             tables[1][c.SCORE].to_numpy(), atol=1e-5)
  # Real over padded tokens: the first waves, of one and two batches, sort
  # little; arrival order pads to about twice the real tokens.
  assert padding_efficiency(waves) > 0.7
  assert padding_efficiency(arrival) < 0.5

  # No state and no timers: nothing held between the read and the write.
  planned = plan_run(common + [f"--output={tmp_path / 'plan'}"],
                     save_main_session=False, echo=lambda m: None)
  assert _stateful_steps(planned.pipeline) == []
  assert any("SortByLength" in t.unique_name for t in
             planned.pipeline.to_runner_api().components.transforms.values())
  bucketed = plan_run(common + [f"--output={tmp_path / 'plan'}",
                                "--length-bucketing"],
                      save_main_session=False, echo=lambda m: None)
  assert _stateful_steps(bucketed.pipeline)


@pytest.mark.parametrize("flag", ["--sort-wave-size=-1",
                                  "--sort-wave-size=many"])
def test_bad_wave_size_is_a_usage_error(flag, tmp_path):
  from click.testing import CliRunner
  from reviewscore.cli import main
  result = CliRunner().invoke(main, [
      "score", "--input", str(tmp_path / "x.parquet"), "--model",
      str(tmp_path / "model"), "--output", str(tmp_path / "out"), flag])
  assert result.exit_code == 2, result.output
  assert "--sort-wave-size" in result.output
