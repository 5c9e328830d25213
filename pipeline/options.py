"""Beam's view of the scoring options (`pipeline.settings` declares them).

Each option accepts Beam's underscore spelling and the CLI's dashed one.
"""
from typing import List, Sequence

from apache_beam.options.pipeline_options import (PipelineOptions,
                                                  _BeamArgumentParser)

from pipeline.settings import SCORE_OPTIONS, spellings


class ScoreOptions(PipelineOptions):
  """`--input GLOB --model DIR --output PREFIX` and how to get there."""

  @classmethod
  def _add_argparse_args(cls, parser):
    for option in SCORE_OPTIONS:
      if option.type is bool:
        parser.add_argument(*option.flags, dest=option.name,
                            action="store_true", default=option.default,
                            help=option.help)
        if option.negation:
          parser.add_argument(*spellings(option.negation), dest=option.name,
                              action="store_false")
        continue
      parser.add_argument(*option.flags, dest=option.name, type=option.type,
                          default=option.default, choices=option.choices,
                          help=option.help)


class BadOptionValue(ValueError):
  """An option of ours or Beam's given a value it does not take."""


class _RaisingParser(_BeamArgumentParser):
  """argparse prints its whole usage (Beam's, over a hundred lines) and
  exits on a bad value; this raises its one-line message instead."""

  def error(self, message):
    raise BadOptionValue(message)


def unknown_flags(argv: Sequence[str]) -> List[str]:
  """Arguments in argv that neither these options nor any of Beam's take:
  flags, and words that are no option's value.

  Beam drops unparseable arguments with a log line; a typo of ours
  (`--num_shard`) must fail instead, and so must the second file of an
  unquoted glob the shell expanded (`--input parts/*.parquet`), which
  would leave every file but the first unscored. Every registered PipelineOptions
  subclass adds its arguments to a parser of Beam's own kind, as
  PipelineOptions itself does when it parses.
  """
  parser = _RaisingParser(allow_abbrev=False)
  classes = {}
  pending = list(PipelineOptions.__subclasses__())
  while pending:
    cls = pending.pop()
    if cls not in classes:
      classes[cls] = None
      pending.extend(cls.__subclasses__())
  for cls in classes:
    if "_add_argparse_args" in cls.__dict__:
      cls._add_argparse_args(parser)  # the documented hook for subclasses
  _, unknown = parser.parse_known_args(list(argv))
  return unknown
