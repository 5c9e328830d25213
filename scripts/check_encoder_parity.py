"""Checks an imported encoder against Hugging Face `transformers` (PyTorch).

Our preprocessor and encoder SavedModels re-implement HF's `BertTokenizer` and
`BertModel` in TensorFlow; this script shows on real IMDB reviews that they
give the same word ids and the same outputs:

  (a) the TF BERT tutorial's sentence gives the tutorial's word ids;
  (b) word ids, mask and type ids equal HF `BertTokenizer`'s (same vocab.txt,
      same lower-casing, truncated to the sequence length) on N test reviews
      spread over length quantiles, half positive and half negative;
  (c) `sequence_output` (non-padding positions) and `pooled_output` of our
      encoder equal `BertModel`'s `last_hidden_state` / `pooler_output` on the
      same inputs within 1e-4 (float32, eval mode).

Needs the parity extra (`pip install -e '.[parity]'`: torch 2.13.0 CPU and
transformers); nothing else in the project imports them. Exits 1 when a check
fails. Review texts are never printed, only review ids.

  .venv/bin/python scripts/check_encoder_parity.py
  .venv/bin/python scripts/check_encoder_parity.py --encoder-dir encoders/minilm
"""
import argparse
import inspect
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

# The checkpoint is read from disk; transformers must never try the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402

TUTORIAL_TEXT = "this is such an amazing movie!"
# From the "Classify text with BERT" tutorial (bert_en_uncased_preprocess/3).
TUTORIAL_WORD_IDS = [101, 2023, 2003, 2107, 2019, 6429, 3185, 999, 102]
TOLERANCE = 1e-4
BATCH = 8


def default_data() -> pathlib.Path:
  root = os.environ.get("REVIEWSCORE_DATA")
  base = pathlib.Path(root) if root else REPO.parent / "shared" / "data" / "imdb"
  return base / "test.parquet"


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument(
      "--encoder-dir", type=pathlib.Path,
      help="directory written by `reviewscore import-encoder` (default: import "
      "the offline MiniLM checkpoint into a temporary directory)")
  parser.add_argument(
      "--checkpoint", type=pathlib.Path,
      help="HF checkpoint directory that --encoder-dir was imported from "
      "(default: the offline MiniLM checkpoint, verified by sha256)")
  parser.add_argument("--data", type=pathlib.Path, default=default_data(),
                      help="parquet file with review_id, text, label "
                      "(default: %(default)s)")
  parser.add_argument("--num-reviews", type=int, default=64,
                      help="reviews compared (default: %(default)s)")
  parser.add_argument("--seq-lengths", default="128,512",
                      help="comma-separated sequence lengths "
                      "(default: %(default)s)")
  parser.add_argument("--seq-length", type=int,
                      help="check this one sequence length only")
  args = parser.parse_args(argv)
  args.seq_lengths = ([args.seq_length] if args.seq_length else
                      [int(v) for v in args.seq_lengths.split(",") if v])
  if any(not 3 <= n <= 512 for n in args.seq_lengths):
    parser.error("sequence lengths must be in [3, 512]")
  if args.num_reviews < 2:
    parser.error("--num-reviews must be at least 2")
  return args


def select_reviews(path: pathlib.Path, n: int):
  """n reviews evenly spread over the length ranking of each label.

  Deterministic: per label, reviews are ranked by (characters, review_id) and
  n/2 ranks are taken at evenly spaced quantiles, shortest and longest
  included, so that short, typical and truncated reviews all appear.
  """
  import pyarrow.parquet as pq
  table = pq.read_table(path, columns=["review_id", "text", "label"]).to_pydict()
  chosen = []
  for label, count in ((0, n // 2), (1, n - n // 2)):
    rows = sorted((len(text), review_id, text)
                  for review_id, text, y in zip(table["review_id"],
                                                table["text"], table["label"], strict=True)
                  if y == label)
    for rank in np.linspace(0, len(rows) - 1, count).round().astype(int):
      _, review_id, text = rows[rank]
      chosen.append((review_id, label, text))
  return chosen


def hf_tokenizer(vocab_path: pathlib.Path, lower_case: bool, vocab_size: int):
  """transformers' BertTokenizer on vocab.txt, across transformers 4 and 5."""
  from transformers import BertTokenizer
  params = inspect.signature(BertTokenizer.__init__).parameters
  if "vocab_file" in params:  # transformers 4: the Python WordPiece tokenizer
    tokenizer = BertTokenizer(vocab_file=str(vocab_path),
                              do_lower_case=lower_case)
  else:  # transformers 5: tokenizers-backed; it ignores an unknown vocab_file=
    from transformers.models.bert.tokenization_bert import load_vocab
    tokenizer = BertTokenizer(vocab=load_vocab(str(vocab_path)),
                              do_lower_case=lower_case)
  if len(tokenizer) != vocab_size:
    raise SystemExit(f"transformers' BertTokenizer has {len(tokenizer)} tokens, "
                     f"vocab.txt {vocab_size}: it did not read the vocabulary")
  return tokenizer


def hf_model(checkpoint_dir: pathlib.Path):
  import torch
  from transformers import BertModel
  from transformers.utils import logging as hf_logging
  hf_logging.disable_progress_bar()
  model, info = BertModel.from_pretrained(
      str(checkpoint_dir), attn_implementation="eager",
      output_loading_info=True)
  if info.get("missing_keys"):
    raise SystemExit(f"BertModel lacks weights {sorted(info['missing_keys'])[:5]}")
  return model.to(torch.float32).eval()


def batches(n: int, size: int = BATCH):
  for start in range(0, n, size):
    yield slice(start, min(start + size, n))


def main(argv=None) -> int:
  args = parse_args(argv)
  import tensorflow as tf
  import torch
  import transformers

  from train.encoders.hf_checkpoint import open_checkpoint, open_minilm
  from train.encoders.importer import (ENCODER_DIR, PREPROCESSOR_DIR,
                                    import_encoder, read_encoder_info)

  checkpoint = (open_checkpoint(args.checkpoint) if args.checkpoint
                else open_minilm())
  temp = None
  if args.encoder_dir is None:
    temp = tempfile.TemporaryDirectory(prefix="parity-")
    started = time.time()
    encoder_dir = import_encoder(checkpoint, pathlib.Path(temp.name) / "encoder")
    print(f"imported {checkpoint.source} in {time.time() - started:.1f} s")
  else:
    encoder_dir = args.encoder_dir
  info = read_encoder_info(encoder_dir) or {}
  imported_sha = info.get("checkpoint", {}).get("weights_sha256")
  if imported_sha != checkpoint.weights_sha256:
    raise SystemExit(f"{encoder_dir} was imported from weights {imported_sha}, "
                     f"not {checkpoint.weights_sha256}: pass --checkpoint")
  print(f"encoder {encoder_dir}: weights sha256 {checkpoint.weights_sha256[:16]}…, "
        f"lower_case={checkpoint.do_lower_case}")
  print(f"tensorflow {tf.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}")

  preprocessor = tf.saved_model.load(str(encoder_dir / PREPROCESSOR_DIR))
  encoder = tf.saved_model.load(str(encoder_dir / ENCODER_DIR))
  rows = []  # (check, seq_length, reviews, value, limit, ok)

  # (a) The tutorial's sentence through the default packing (`__call__`).
  packed = {k: v.numpy() for k, v in preprocessor(
      tf.constant([TUTORIAL_TEXT])).items()}
  ids = packed["input_word_ids"]
  length = info.get("preprocessor", {}).get("seq_length", 128)
  n = len(TUTORIAL_WORD_IDS)
  expected_ids = TUTORIAL_WORD_IDS + [0] * (length - n)
  expected_mask = [1] * n + [0] * (length - n)
  ok = (ids.shape == (1, length) and ids[0].tolist() == expected_ids and
        packed["input_mask"][0].tolist() == expected_mask and
        not packed["input_type_ids"].any())
  print(f"\n(a) {TUTORIAL_TEXT!r}")
  for key in ("input_word_ids", "input_mask", "input_type_ids"):
    print(f"  {key:15s} shape {packed[key].shape} {packed[key][0, :12]}")
  rows.append(("tutorial sentence ids", length, 1,
               "equal" if ok else "DIFFER", "exact", ok))

  reviews = select_reviews(args.data, args.num_reviews)
  texts = [text for _, _, text in reviews]
  lengths = sorted(len(t) for t in texts)
  print(f"\n{len(reviews)} reviews of {args.data.name} "
        f"({sum(y for _, y, _ in reviews)} positive), {lengths[0]} to "
        f"{lengths[-1]} characters, median {lengths[len(lengths) // 2]}")
  tokenizer = hf_tokenizer(checkpoint.vocab_path, checkpoint.do_lower_case,
                           info.get("preprocessor", {}).get("vocab_size") or
                           len(checkpoint.vocab_path.read_text(
                               encoding="utf-8").splitlines()))
  model = hf_model(checkpoint.directory)
  torch.set_grad_enabled(False)

  for seq_length in args.seq_lengths:
    # (b) Word ids of our preprocessor and of transformers' BertTokenizer.
    tokens = preprocessor.tokenize(tf.constant(texts))
    ours = {k: v.numpy() for k, v in preprocessor.bert_pack_inputs(
        [tokens], tf.constant(seq_length, tf.int32)).items()}
    hf = tokenizer(texts, max_length=seq_length, truncation=True,
                   padding="max_length", return_tensors="np")
    differ = [review_id for i, (review_id, _, _) in enumerate(reviews)
              if not (np.array_equal(ours["input_word_ids"][i], hf["input_ids"][i])
                      and np.array_equal(ours["input_mask"][i],
                                         hf["attention_mask"][i])
                      and np.array_equal(ours["input_type_ids"][i],
                                         hf["token_type_ids"][i]))]
    truncated = int((ours["input_mask"][:, -1] == 1).sum())
    print(f"\n(b) seq_length {seq_length}: {len(differ)} of {len(reviews)} "
          f"reviews differ from BertTokenizer ({truncated} truncated)"
          + (f": {differ[:10]}" if differ else ""))
    rows.append(("word ids = HF BertTokenizer", seq_length, len(reviews),
                 f"{len(differ)} differ ({truncated} truncated)", "0 differ",
                 not differ))

    # (c) Encoder outputs on the same (our) inputs, in batches.
    seq_diff = pooled_diff = scale = 0.0
    started = time.time()
    tf_s = torch_s = 0.0
    for part in batches(len(reviews)):
      inputs = {k: tf.constant(v[part]) for k, v in ours.items()}
      t0 = time.time()
      out = encoder(inputs, training=False)
      seq, pooled = out["sequence_output"].numpy(), out["pooled_output"].numpy()
      t1 = time.time()
      ref = model(input_ids=torch.from_numpy(ours["input_word_ids"][part]).long(),
                  attention_mask=torch.from_numpy(ours["input_mask"][part]).long(),
                  token_type_ids=torch.from_numpy(
                      ours["input_type_ids"][part]).long())
      t2 = time.time()
      tf_s, torch_s = tf_s + t1 - t0, torch_s + t2 - t1
      real = ours["input_mask"][part].astype(bool)
      ref_seq = ref.last_hidden_state.numpy()
      seq_diff = max(seq_diff, float(np.abs(seq - ref_seq)[real].max()))
      pooled_diff = max(pooled_diff, float(
          np.abs(pooled - ref.pooler_output.numpy()).max()))
      scale = max(scale, float(np.abs(ref_seq[real]).max()))
    print(f"(c) seq_length {seq_length}: max |Δ| sequence_output {seq_diff:.2e} "
          f"(values up to {scale:.1f}), pooled_output {pooled_diff:.2e} "
          f"[TF {tf_s:.1f} s, PyTorch {torch_s:.1f} s, "
          f"{time.time() - started:.1f} s]")
    rows.append(("sequence_output (non-padding)", seq_length, len(reviews),
                 f"{seq_diff:.1e}", f"< {TOLERANCE:.0e}", seq_diff < TOLERANCE))
    rows.append(("pooled_output", seq_length, len(reviews),
                 f"{pooled_diff:.1e}", f"< {TOLERANCE:.0e}",
                 pooled_diff < TOLERANCE))

  print(f"\nParity of `{info.get('checkpoint', {}).get('source', encoder_dir)}` "
        f"with transformers {transformers.__version__} (torch "
        f"{torch.__version__}), float32 CPU:\n")
  print("| check | seq_length | reviews | result | required | ok |")
  print("| --- | ---: | ---: | --- | --- | --- |")
  for check, seq_length, count, value, limit, ok in rows:
    print(f"| {check} | {seq_length} | {count} | {value} | {limit} | "
          f"{'yes' if ok else 'NO'} |")
  if temp is not None:
    temp.cleanup()
  failed = [row[0] for row in rows if not row[-1]]
  if failed:
    print(f"\nFAILED: {', '.join(sorted(set(failed)))}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
