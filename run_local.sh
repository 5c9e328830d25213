#!/usr/bin/env bash
# The whole local job on real data, end to end:
#   1. .venv with reviewscore installed (scripts/bootstrap.sh), if missing;
#   2. the offline all-MiniLM-L6-v2 encoder imported into encoders/minilm;
#   3. a quick fine-tuning run (reused when its model card exists);
#   4. scoring of the 25,000 IMDB test reviews on DirectRunner;
#   5. where the outputs are, the counts, the accuracy and the elapsed time.
#
# Settings (environment variables):
#   REVIEWSCORE_DATA  folder with train.parquet/test.parquet (../shared/data/imdb)
#   TRAIN_EXAMPLES    labelled reviews to train on, or "all"        (2000)
#   EPOCHS            training epochs                                (1)
#   SEQ_LENGTH        wordpieces per review                          (128)
#   TRAIN_OPTIONS     more `reviewscore train` options
#                     (--pooling mean --learning-rate 1e-4 --batch-size 16: a
#                     2,000-review epoch is only 100 steps, too few at 3e-5)
#   MODEL_DIR         model directory (models/quick for the defaults)
#   INPUT             what to score: file, glob or folder  ($REVIEWSCORE_DATA/test.parquet)
#   OUTPUT            output prefix                                  (scores/local)
#   NUM_SHARDS        output shards                                  (4)
# Arguments are passed to `reviewscore score` (and on to Beam), e.g.
#   ./run_local.sh --direct_running_mode=multi_processing --direct_num_workers=2
# Full settings: TRAIN_EXAMPLES=all EPOCHS=3 ./run_local.sh
set -euo pipefail
cd "$(dirname "$0")"
start=$(date +%s)

DATA="${REVIEWSCORE_DATA:-../shared/data/imdb}"
TRAIN_EXAMPLES="${TRAIN_EXAMPLES:-2000}"
EPOCHS="${EPOCHS:-1}"
SEQ_LENGTH="${SEQ_LENGTH:-128}"
if [ "$TRAIN_EXAMPLES/$EPOCHS/$SEQ_LENGTH" = "2000/1/128" ]; then
  default_model=models/quick
else
  default_model="models/n${TRAIN_EXAMPLES}-e${EPOCHS}-s${SEQ_LENGTH}"
fi
MODEL_DIR="${MODEL_DIR:-$default_model}"
read -r -a TRAIN_OPTIONS <<< "${TRAIN_OPTIONS:---pooling mean --learning-rate 1e-4 --batch-size 16}"
INPUT="${INPUT:-$DATA/test.parquet}"
OUTPUT="${OUTPUT:-scores/local}"
NUM_SHARDS="${NUM_SHARDS:-4}"

step() { printf '\n== %s (%ds)\n' "$1" "$(( $(date +%s) - start ))" >&2; }

if [ ! -x .venv/bin/reviewscore ]; then
  step "creating .venv and installing reviewscore"
  scripts/bootstrap.sh test
fi
RS=.venv/bin/reviewscore

if [ ! -f encoders/minilm/encoder_info.json ]; then
  step "importing the offline encoder into encoders/minilm"
  "$RS" import-encoder encoders/minilm
fi

if [ -f "$MODEL_DIR/model_card.json" ]; then
  step "reusing the model in $MODEL_DIR"
else
  step "training $MODEL_DIR ($TRAIN_EXAMPLES reviews, $EPOCHS epoch(s), seq_length $SEQ_LENGTH)"
  limits=()
  if [ "$TRAIN_EXAMPLES" != all ]; then
    limits=(--max-examples "$TRAIN_EXAMPLES" --max-test-examples 2000)
  fi
  resume=()
  [ -f "$MODEL_DIR/train_state.json" ] && resume=(--resume)
  "$RS" train --data "$DATA" --encoder encoders/minilm --out "$MODEL_DIR" \
    --epochs "$EPOCHS" --seq-length "$SEQ_LENGTH" "${TRAIN_OPTIONS[@]}" \
    "${limits[@]}" "${resume[@]}"
fi

step "scoring $INPUT on DirectRunner"
score_start=$(date +%s)
"$RS" score --input "$INPUT" --model "$MODEL_DIR" --output "$OUTPUT" \
  --num-shards "$NUM_SHARDS" "$@"
score_secs=$(( $(date +%s) - score_start ))

step "summary"
.venv/bin/python - "$OUTPUT-manifest.json" "$INPUT" "$score_secs" <<'EOF'
import json, sys
import pyarrow.compute as pc
import pyarrow.parquet as pq
manifest = json.load(open(sys.argv[1]))
counts = manifest["counts"]
print(f"scores:       {', '.join(manifest['scores'])}")
print(f"dead letters: {', '.join(manifest['errors'])}")
print(f"manifest:     {sys.argv[1]}")
print(f"counts:       read {counts['read']:,} = scored {counts['scored']:,} "
      f"+ dead-lettered {counts['dead_lettered']:,} "
      f"{counts['dead_lettered_by_reason'] or ''}")
seconds = max(int(sys.argv[3]), 1)
print(f"scoring:      {seconds}s, {counts['scored'] / seconds:,.0f} reviews/s "
      "(including start-up)")
scores = pq.read_table(manifest["scores"], columns=["review_id", "label_id"])
try:
  truth = pq.read_table(sys.argv[2], columns=["review_id", "label"])
except Exception:  # not a labelled Parquet input: no accuracy to give
  truth = None
if truth is not None:
  joined = scores.join(truth, "review_id", join_type="inner")
  correct = pc.sum(pc.equal(pc.cast(joined["label_id"], "int64"),
                            pc.cast(joined["label"], "int64"))).as_py()
  print(f"accuracy:     {correct / joined.num_rows:.4f} on {joined.num_rows:,} "
        "labelled reviews (joined on review_id)")
EOF
echo "elapsed:      $(( $(date +%s) - start ))s" >&2
