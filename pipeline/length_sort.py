"""Length-sorted waves: reviews reach Beam's batching in order of length.

RunInference cuts batches with Beam's BatchElements in arrival order, and a
batch is padded to its longest review. `SortByLengthInWaves` holds a bounded
wave of tokenized reviews, sorts it by token count and passes it on, so that
consecutive reviews, and hence the batches cut from them, have similar
lengths. Nothing is keyed or shuffled: the steps from reading to writing
stay one fused stage and a worker holds at most one wave, however large the
input (Beam's stateful length-bucketed BatchElements needs a shuffle, which
DirectRunner's FnApiRunner holds in memory whole).

Waves start at one inference batch and double up to the limit, so the first
batch is scored as soon as it is tokenized; they alternate between ascending
and descending order, so the batch that straddles two waves joins reviews of
similar lengths (the longest of one wave with the longest of the next).

Batch scoring reads bounded files into the global window, and a wave
flushed at a bundle's end is emitted there; records of any other window are
refused rather than moved into the global one.
"""
from typing import Any, Dict, List

import apache_beam as beam
from apache_beam.transforms import window

from pipeline.model_handler import token_count


class SortByLengthInWaves(beam.DoFn):
  """Tokenized records → the same records, sorted by length within waves."""

  def __init__(self, max_wave: int, first_wave: int):
    if max_wave < 1 or first_wave < 1:
      raise ValueError("wave sizes must be positive")
    self._max_wave = max_wave
    self._first_wave = min(first_wave, max_wave)

  def start_bundle(self):
    self._wave: List[Dict[str, Any]] = []
    self._wave_size = self._first_wave
    self._descending = False

  def _sorted_wave(self):
    wave, self._wave = self._wave, []
    wave.sort(key=token_count, reverse=self._descending)
    self._descending = not self._descending
    self._wave_size = min(2 * self._wave_size, self._max_wave)
    return wave

  def process(self, record, element_window=beam.DoFn.WindowParam):
    if not isinstance(element_window, window.GlobalWindow):
      raise ValueError(f"SortByLengthInWaves sorts the global window only, "
                       f"got {element_window}")
    self._wave.append(record)
    if len(self._wave) >= self._wave_size:
      yield from self._sorted_wave()

  def finish_bundle(self):
    if self._wave:
      for record in self._sorted_wave():
        yield window.GlobalWindows.windowed_value_at_end_of_window(record)
