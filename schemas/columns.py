"""Names of columns and of Parquet schema-metadata keys."""

# Input columns (the defaults; the CLI lets users name others).
INPUT_ID = "review_id"
INPUT_TEXT = "text"
INPUT_LABEL = "label"

# Scored output.
REVIEW_ID = "review_id"
SCORE = "score"  # float32: the positive class's probability (two classes)
LABEL_NAME = "label"  # class name, e.g. "pos"
LABEL_ID = "label_id"  # class index, int8
MODEL_FINGERPRINT = "model_fingerprint"
# The input file a row came from, as matched (dead letters name it so too):
# a rerun that rescores a changed file drops that file's earlier rows by it.
SOURCE_FILE = "source_file"
SCORED_FIELDS = (REVIEW_ID, SCORE, LABEL_NAME, LABEL_ID, MODEL_FINGERPRINT,
                 SOURCE_FILE)
# Models over three or more classes: every class's probability, in the
# order of the class names (schema metadata); `score` is the likeliest's.
CLASS_SCORES = "class_scores"

# Dead-letter output: every record that could not be scored, with why.
ERROR_SOURCE = SOURCE_FILE  # the input file a dead letter came from
ERROR_REASON = "reason"  # one of DEAD_LETTER_REASONS
ERROR_DETAIL = "detail"  # free text: the exception message, the byte count...
ERROR_TEXT_PREVIEW = "text_preview"
DEAD_LETTER_FIELDS = (REVIEW_ID, SOURCE_FILE, ERROR_REASON, ERROR_DETAIL,
                      ERROR_TEXT_PREVIEW)

# Values of the `reason` column: analytics filter on these, so they are names
# of the contract like the columns themselves.
REASON_NULL_TEXT = "null_text"
REASON_EMPTY_TEXT = "empty_text"  # empty or whitespace only
REASON_NOT_A_STRING = "not_a_string"  # a number, a list, a struct...
REASON_UNDECODABLE = "undecodable_bytes"  # not UTF-8
REASON_BINARY = "binary_content"  # decodes, but holds NUL bytes
REASON_TOO_LONG = "too_long"  # over --max-review-bytes
REASON_UNREADABLE = "unreadable_file"  # one review file that cannot be read
REASON_MALFORMED_ROW = "malformed_row"  # a CSV row with the wrong field count
REASON_TOKENIZE_FAILED = "tokenize_failed"
REASON_INFERENCE_FAILED = "inference_failed"
DEAD_LETTER_REASONS = (
    REASON_NULL_TEXT, REASON_EMPTY_TEXT, REASON_NOT_A_STRING,
    REASON_UNDECODABLE, REASON_BINARY, REASON_TOO_LONG, REASON_UNREADABLE,
    REASON_MALFORMED_ROW, REASON_TOKENIZE_FAILED, REASON_INFERENCE_FAILED)

# Parquet schema metadata (key/value pairs in the file footer).
METADATA_MODEL_NAME = b"reviewscore.model"
METADATA_MODEL_FINGERPRINT = b"reviewscore.model_fingerprint"
METADATA_THRESHOLD = b"reviewscore.threshold"
METADATA_CLASS_NAMES = b"reviewscore.class_names"
