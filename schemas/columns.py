"""Names of columns and of Parquet schema-metadata keys."""

# Input columns (the defaults; the CLI lets users name others).
INPUT_ID = "review_id"
INPUT_TEXT = "text"
INPUT_LABEL = "label"

# Scored output.
REVIEW_ID = "review_id"
SCORE = "score"  # positive-class probability, float32
LABEL_NAME = "label"  # class name, e.g. "pos"
LABEL_ID = "label_id"  # class index, int8
MODEL_FINGERPRINT = "model_fingerprint"
SCORED_FIELDS = (REVIEW_ID, SCORE, LABEL_NAME, LABEL_ID, MODEL_FINGERPRINT)

# Dead-letter output: every record that could not be scored, with why.
SOURCE_FILE = "source_file"
ERROR_REASON = "reason"
ERROR_TEXT_PREVIEW = "text_preview"
DEAD_LETTER_FIELDS = (REVIEW_ID, SOURCE_FILE, ERROR_REASON, ERROR_TEXT_PREVIEW)

# Parquet schema metadata (key/value pairs in the file footer).
METADATA_MODEL_NAME = b"reviewscore.model"
METADATA_MODEL_FINGERPRINT = b"reviewscore.model_fingerprint"
METADATA_THRESHOLD = b"reviewscore.threshold"
METADATA_CLASS_NAMES = b"reviewscore.class_names"
