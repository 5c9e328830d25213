"""Named bundles of training settings, applied under any option given.

`TrainSettings`' own defaults are the best recipe measured here (an epoch
takes about 30 minutes on 2 CPU cores, an hour when the host runs at half
speed); `quick` trades accuracy for a run of a few minutes, for
demonstrations and `run_local.sh` (docs/accuracy.md has both).
"""
from typing import Any, Dict

PRESETS: Dict[str, Dict[str, Any]] = {
    "best": {},
    "quick": {"max_examples": 9000, "validation_fraction": 0.1,
              "max_test_examples": 500, "epochs": 1, "seq_length": 256,
              "learning_rate": 1e-4},
}
DEFAULT_PRESET = "best"
