"""The plain ONNX Runtime script a user would write around a model's int8
copy, as a whole process: the peer `reviewscore score` is measured against.

    python benchmarks/ort_script.py MODEL INPUT.parquet OUTPUT.parquet

Reads the Parquet file's ids and texts with pyarrow, tokenizes them with
Hugging Face's fast WordPiece tokenizer (the checkpoint's vocabulary,
lower-cased; truncated to the model's length, head and tail as the model
was trained), sorts them by length into batches of 32 padded to their
longest, scores them with ONNX Runtime on the model's own int8 copy (the
same graph and threads as our workers), and writes ids, scores and labels
as Parquet. No TensorFlow, no Beam. MiniLM-based models only (their
vocabulary ships with the offline checkpoint).
"""
import argparse
import json
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

BATCH = 32


def head_and_tail(ids, length, head):
  """[CLS] + the first `head` and the last wordpieces + [SEP], `length` in
  all, as the model's packer truncates."""
  cls, body, sep = ids[:1], ids[1:-1], ids[-1:]
  room = length - 2
  if len(body) > room:
    body = body[:head] + body[len(body) - (room - head):]
  return cls + body + sep


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("model", type=pathlib.Path)
  parser.add_argument("input", type=pathlib.Path)
  parser.add_argument("output", type=pathlib.Path)
  args = parser.parse_args(argv)
  import onnxruntime as ort
  import pyarrow as pa
  import pyarrow.parquet as pq
  from tokenizers import BertWordPieceTokenizer

  from train.encoders.hf_checkpoint import minilm_directory
  card = json.loads((args.model / "model_card.json").read_text())
  truncation = card.get("truncation") or {}
  length = int(card["seq_length"])
  head = int(truncation.get("head_tokens", length - 2)) \
      if truncation.get("truncation") == "head+tail" else length - 2
  tokenizer = BertWordPieceTokenizer(
      str(minilm_directory() / "vocab.txt"), lowercase=True)
  table = pq.read_table(args.input, columns=["review_id", "text"])
  encoded = tokenizer.encode_batch(table["text"].to_pylist())
  tokens = [head_and_tail(e.ids, length, head) for e in encoded]
  options = ort.SessionOptions()
  options.intra_op_num_threads = len(__import__("os").sched_getaffinity(0))
  session = ort.InferenceSession(
      str(args.model / "int8" / "classify_tokens_int8.onnx"), options,
      providers=["CPUExecutionProvider"])
  order = np.argsort([len(t) for t in tokens], kind="stable")
  scores = np.empty(len(tokens), np.float32)
  labels = np.empty(len(tokens), np.int32)
  for start in range(0, len(order), BATCH):
    rows = order[start:start + BATCH]
    width = max(len(tokens[r]) for r in rows)
    ids = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
      ids[i, :len(tokens[r])] = tokens[r]
      mask[i, :len(tokens[r])] = 1
    probability, label = session.run(
        ["probability", "label_id"],
        {"input_word_ids": ids, "input_mask": mask})
    scores[rows], labels[rows] = probability, label
  pq.write_table(pa.table({"review_id": table["review_id"],
                           "score": scores, "label_id": labels}), args.output)


if __name__ == "__main__":
  main()
