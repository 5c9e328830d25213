"""Training's layer norms: the form `reviewscore train` uses (float32
moments, centring, scaling, gamma, beta: a pass each over the activations,
and autodiff's chain of as many again backwards; `LayerNorm.call` in
`train/model/bert_backbone.py`) against two candidates with the same
float32 statistics and affine step, kept here because they were not
adopted (docs/performance.md):

  fused-batch-norm  the rows as the channels of one NCHW FusedBatchNormV3
                    in training mode, its gradient one FusedBatchNormGradV3
                    (the kernel bfloat16 scoring already uses);
  written-out       the gradients written out from the normalised rows kept
                    from the forward pass: dx = rstd · (g − mean(g) −
                    x̂ · mean(g · x̂)), g = upstream · gamma.

    .venv/bin/python benchmarks/layer_norm_gradient.py [--seq-length 256]
        [--rounds 5] [--train-steps 6] [--precisions float32,bfloat16]

1. A layer norm and its gradients (input, gamma, beta) on a training batch's
   hidden states ([32 * L, 384], float32 and bfloat16 inputs), each way,
   calls alternating, with the largest difference from the stock form.
2. The training step of `reviewscore train` (MiniLM from encoders/minilm,
   mean pooling, batches of 32 IMDB training reviews at up to L tokens) in
   each of --precisions, stock against the faster candidate of part 1: two
   models in this process, steps alternating on the same batches.
Prints milliseconds and the ratio; nothing is written.
"""
import os
import pathlib
import sys
from unittest import mock

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks.dropout_masks import time_calls  # noqa: E402
from benchmarks.train_throughput import run_side_by_side  # noqa: E402
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HIDDEN = 384
CANDIDATES = ("fused-batch-norm", "written-out")
# Part 1's faster candidate, which part 2 puts in the training step.
_faster = []


def _fused_batch_norm(layer, x):
  import tensorflow as tf
  # bfloat16 scoring's kernel, on float32 rows, with the float32 affine step.
  normed = layer.normalized_rows(tf.cast(x, tf.float32))
  return tf.cast(normed * layer.gamma + layer.beta, layer.compute_dtype)


def _written_out(layer, x):
  import tensorflow as tf

  @tf.custom_gradient
  def normalise(x32, gamma, beta):
    centred = x32 - tf.reduce_mean(x32, axis=-1, keepdims=True)
    rstd = tf.math.rsqrt(tf.reduce_mean(tf.square(centred), axis=-1,
                                        keepdims=True) + layer.epsilon)
    normed = centred * rstd

    def gradient(upstream):
      g = upstream * gamma
      dx = rstd * (g - tf.reduce_mean(g, axis=-1, keepdims=True) -
                   normed * tf.reduce_mean(g * normed, axis=-1, keepdims=True))
      rows = tf.range(tf.rank(upstream) - 1)
      return (dx, tf.reduce_sum(upstream * normed, axis=rows),
              tf.reduce_sum(upstream, axis=rows))

    return normed * gamma + beta, gradient

  return tf.cast(normalise(tf.cast(x, tf.float32),
                           tf.convert_to_tensor(layer.gamma),
                           tf.convert_to_tensor(layer.beta)),
                 layer.compute_dtype)


FORMS = {"fused-batch-norm": _fused_batch_norm, "written-out": _written_out}


def layer_norm_calls(seq_length, rounds):
  import tensorflow as tf
  from train.model.bert_backbone import LayerNorm

  totals = {name: 0.0 for name in CANDIDATES}
  for policy in ("float32", "mixed_bfloat16"):
    layer = LayerNorm(1e-12, dtype=policy)
    layer.build([None, HIDDEN])
    layer.gamma.assign(tf.random.stateless_uniform([HIDDEN], [0, 2], 0.5, 1.5))
    layer.beta.assign(tf.random.stateless_normal([HIDDEN], [0, 3]) * 0.1)
    compute = tf.as_dtype(layer.compute_dtype)

    def value_and_gradients(form):
      @tf.function
      def call(x, upstream):
        with tf.GradientTape() as tape:
          tape.watch(x)
          y = layer(x) if form is None else form(layer, x)
        gradients = tape.gradient(y, [x, layer.gamma, layer.beta],
                                  output_gradients=upstream)
        return tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1]) for t in
                          [y] + gradients], axis=0)
      return call

    functions = {"stock": value_and_gradients(None),
                 **{name: value_and_gradients(FORMS[name])
                    for name in CANDIDATES}}
    rows = 32 * seq_length
    x = tf.cast(tf.random.stateless_normal([rows, HIDDEN], [0, 1]) * 3 + 1,
                compute)
    upstream = tf.cast(tf.random.stateless_normal([rows, HIDDEN], [0, 4]),
                       compute)
    seconds = time_calls(functions, (x, upstream), rounds)
    stock = functions["stock"](x, upstream)
    line = (f"layer norm and gradients on {rows} x {HIDDEN} {compute.name}: "
            f"stock {seconds['stock'] * 1e3:.1f} ms")
    for name in CANDIDATES:
      totals[name] += seconds[name]
      difference = float(tf.reduce_max(tf.abs(functions[name](x, upstream) -
                                              stock)))
      line += (f"  {name} {seconds[name] * 1e3:.1f} ms "
               f"×{seconds['stock'] / seconds[name]:.2f} (largest difference "
               f"{difference:.2g})")
    print(line, flush=True)
  _faster.append(min(totals, key=totals.get))


def training_variants():
  from train.model.bert_backbone import LayerNorm
  form = FORMS[_faster[-1]]
  stock_call = LayerNorm.call
  print(f"training step with the {_faster[-1]} layer norm as ours", flush=True)

  def call(self, x, fused=False):
    # The training step's layer norms are the unfused ones.
    return stock_call(self, x, fused) if fused else form(self, x)

  # In force while the step is traced.
  return {"stock": lambda: mock.patch.object(LayerNorm, "call", stock_call),
          "ours": lambda: mock.patch.object(LayerNorm, "call", call)}


def main(argv=None):
  run_side_by_side(__doc__.split("\n\n")[0], argv, first_part="layer norm calls",
                   calls=layer_norm_calls, training_variants=training_variants)


if __name__ == "__main__":
  main()
