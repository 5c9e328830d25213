#!/usr/bin/env bash
# The whole local job on real data, end to end:
#   1. .venv with reviewscore installed (scripts/bootstrap.sh), if missing;
#   2. the IMDB data: $REVIEWSCORE_DATA, else ../shared/data/imdb when present,
#      else downloaded once into data/imdb (`reviewscore download-imdb`;
#      $REVIEWSCORE_IMDB_URL names a mirror);
#   3. the offline all-MiniLM-L6-v2 encoder imported into encoders/minilm;
#   4. a training run with the quick preset (reused when its model card exists);
#   5. scoring of the 25,000 IMDB test reviews on DirectRunner, every scoring
#      default (precision auto, length-sorted batches of 32);
#   6. where the outputs are, the counts, the accuracy and the elapsed time.
#
# Settings (environment variables):
#   REVIEWSCORE_DATA  folder with train.parquet/test.parquet
#   PRESET            training preset: quick (minutes) or best (hours)  (quick)
#   TRAIN_OPTIONS     more `reviewscore train` options, e.g. "--epochs 2"
#   MODEL_DIR         model directory                              (models/$PRESET)
#   INPUT             what to score: file, glob or folder  ($DATA/test.parquet)
#   OUTPUT            output prefix                                (scores/local)
# Arguments are passed to `reviewscore score` (and on to Beam), e.g.
#   ./run_local.sh --num-shards 4
#   ./run_local.sh --direct_running_mode=multi_processing --direct_num_workers=2
set -euo pipefail
cd "$(dirname "$0")"
start=$(date +%s)

PRESET="${PRESET:-quick}"
MODEL_DIR="${MODEL_DIR:-models/$PRESET}"
read -r -a TRAIN_OPTIONS <<< "${TRAIN_OPTIONS:-}"
OUTPUT="${OUTPUT:-scores/local}"

# Each phase's time, printed at the end: "name seconds" lines.
phases=()
phase_start=$start
phase_name=""
step() {
  local now; now=$(date +%s)
  [ -n "$phase_name" ] && phases+=("$phase_name $(( now - phase_start ))")
  phase_name="$1"; phase_start=$now
  printf '\n== %s (%ds)\n' "$1" "$(( now - start ))" >&2
}

if [ ! -x .venv/bin/reviewscore ]; then
  step "creating .venv and installing reviewscore"
  scripts/bootstrap.sh test
fi
RS=.venv/bin/reviewscore

if [ -n "${REVIEWSCORE_DATA:-}" ]; then
  DATA="$REVIEWSCORE_DATA"
elif [ -f ../shared/data/imdb/test.parquet ]; then
  DATA=../shared/data/imdb
else
  DATA=data/imdb
  if [ ! -f "$DATA/test.parquet" ]; then
    step "downloading the IMDB reviews into $DATA"
    "$RS" download-imdb "$DATA"
  fi
fi
INPUT="${INPUT:-$DATA/test.parquet}"

if [ ! -f encoders/minilm/encoder_info.json ]; then
  step "importing the offline encoder into encoders/minilm"
  "$RS" import-encoder encoders/minilm
fi

if [ -f "$MODEL_DIR/model_card.json" ]; then
  step "reusing the model in $MODEL_DIR"
else
  step "training $MODEL_DIR (preset $PRESET)"
  resume=()
  [ -f "$MODEL_DIR/train_state.json" ] && resume=(--resume)
  "$RS" train --data "$DATA" --encoder encoders/minilm --out "$MODEL_DIR" \
    --preset "$PRESET" "${TRAIN_OPTIONS[@]}" "${resume[@]}"
fi

step "scoring $INPUT on DirectRunner"
score_start=$(date +%s)
"$RS" score --input "$INPUT" --model "$MODEL_DIR" --output "$OUTPUT" "$@"
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
precision = manifest["model"]["precision"]
print(f"precision:    {'; '.join(precision.get('why') or precision['used'])} "
      f"(asked: {precision['requested']})")
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
step "done"
for phase in "${phases[@]}"; do
  printf 'phase:        %ss  %s\n' "${phase##* }" "${phase% *}" >&2
done
echo "elapsed:      $(( $(date +%s) - start ))s" >&2
