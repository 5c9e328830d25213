"""Column names and Arrow schemas shared by training, scoring and analytics.

This package is the single source of truth for the names of columns and of
schema-metadata keys. It imports nothing else of ours so that every other
package (and every Beam worker) can depend on it.
"""
from schemas.columns import (  # noqa: F401
    DEAD_LETTER_FIELDS,
    DEAD_LETTER_REASONS,
    ERROR_DETAIL,
    ERROR_REASON,
    ERROR_SOURCE,
    ERROR_TEXT_PREVIEW,
    INPUT_ID,
    INPUT_LABEL,
    INPUT_TEXT,
    LABEL_ID,
    LABEL_NAME,
    METADATA_CLASS_NAMES,
    METADATA_MODEL_FINGERPRINT,
    METADATA_MODEL_NAME,
    METADATA_THRESHOLD,
    MODEL_FINGERPRINT,
    REVIEW_ID,
    SCORE,
    SCORED_FIELDS,
    SOURCE_FILE,
)
from schemas.arrow import (  # noqa: F401
    dead_letter_schema,
    scored_schema,
    scored_schema_metadata,
)
