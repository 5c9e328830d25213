"""Training settings and their defaults, declared once (the CLI reads them).

No TensorFlow here: `reviewscore train --help` stays fast.
"""
import dataclasses
from typing import Optional, Tuple

# The values of the choice settings ("auto" besides, where a setting has it).
TRUNCATIONS = ("head", "head+tail")
POOLINGS = ("cls", "mean")
PRECISIONS = ("float32", "bfloat16", "float16")
# `pretrain` offers the CPU's two (float16 is for GPUs).
PRETRAIN_PRECISIONS = ("float32", "bfloat16")
AUTO = "auto"
# The packing length an imported preprocessor applies when a caller gives
# none (`train` packs to its own --seq-length).
IMPORT_SEQ_LENGTH = 128


@dataclasses.dataclass
class LoopSettings:
  """What both training loops (fine-tuning and pre-training) take, with the
  defaults they share: AdamW with warm-up and linear decay, mixed precision,
  checkpoints, the seed of every random choice, and the text's markup."""
  batch_size: int = 32
  learning_rate: float = 5e-5
  warmup_fraction: float = 0.1
  weight_decay: float = 0.01
  seq_length: int = 512
  # Keep HTML line breaks (<br />) in the text; by default they become
  # spaces, in training and in the exported model's tokenizer alike.
  keep_markup: bool = False
  precision: str = "auto"
  checkpoint_every_steps: int = 100
  seed: int = 42

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainSettings(LoopSettings):
  """Every training setting, with its default: the recipe that measured best
  here (all-MiniLM-L6-v2 on IMDB: 512 wordpieces head+tail, 5e-5, two
  epochs; docs/accuracy.md). `auto` values are resolved per run by
  `resolve_auto`: pooling from what the encoder was trained for, precision
  from the hardware.
  """
  epochs: int = 2
  truncation: str = "head+tail"
  # None: a quarter of seq_length (Sun et al.'s 128 of 512).
  head_tokens: Optional[int] = None
  pooling: str = "auto"
  dropout: float = 0.1
  # The lowest layers of the encoder left as they were pre-trained, the
  # embeddings counting as the first: no gradient is computed below them.
  frozen_layers: int = 0
  patience: int = 1
  length_bucketing: bool = True
  validation_fraction: float = 0.2
  max_examples: Optional[int] = None
  # Self-training (`--pseudo-labels`): teacher-labelled reviews kept when the
  # teacher's likeliest class has at least this probability; two-class
  # targets are the teacher's probability (soft) or its label (hard).
  pseudo_label_confidence: float = 0.9
  soft_pseudo_labels: bool = True


def resolve_auto(settings: TrainSettings, *, encoder_pooling: str,
                 has_gpu: bool, cpu_flags=None) -> Tuple[TrainSettings, str]:
  """Settings with every `auto` made concrete, and a line saying why."""
  from runtime.hardware import AUTO, choose_precision
  pooling, pooling_why = settings.pooling, "asked for"
  if pooling == AUTO:
    pooling, pooling_why = encoder_pooling, "auto: what the encoder was trained for"
  precision, precision_why = choose_precision(
      settings.precision, has_gpu=has_gpu, flags=cpu_flags)
  head_tokens = settings.head_tokens
  if head_tokens is None:
    head_tokens = max(1, settings.seq_length // 4)
  resolved = dataclasses.replace(settings, pooling=pooling, precision=precision,
                                 head_tokens=head_tokens)
  return resolved, (f"pooling {pooling} ({pooling_why}), precision {precision} "
                    f"({precision_why})")


@dataclasses.dataclass
class PretrainSettings(LoopSettings):
  """Domain-adaptive pre-training settings, with their defaults.

  Masked-language-model training continues on chunks of `seq_length`
  wordpieces cut from each text; `mask_fraction` of each chunk's wordpieces
  are predicted, chosen a whole word at a time (of them 80% become [MASK],
  10% a random wordpiece, 10% stay). `steps` bounds the run: with the
  defaults, about an epoch of the 75,000 IMDB texts (unsup + train) is 6,700
  steps.
  """
  seq_length: int = 128
  warmup_fraction: float = 0.06
  steps: int = 2000
  # The new prediction head's learning rate, as a multiple of the encoder's.
  head_learning_rate_multiplier: float = 1.0
  mask_fraction: float = 0.15
  validation_chunks: int = 512
  max_texts: Optional[int] = None
