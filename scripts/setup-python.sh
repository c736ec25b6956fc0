#!/usr/bin/env bash
# The Python side, once and idempotently: a git-ignored .venv/ at the repository root with the
# test and example dependencies (numpy, pytest, matplotlib, torch, transformers, accelerate,
# gguf) and the build tools, then attnkit installed editable into it. The dependency set is
# installed only when python/requirements.txt changed since the last install (a stamp in the
# venv); the editable install rebuilds the extension incrementally (build-python/), so the
# package always holds the current C++.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
REQ=python/requirements.txt
python=python3
command -v "$python" >/dev/null || { echo "setup-python: python3 not found" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-python: creating $VENV"
  "$python" -m venv "$VENV"
fi
stamp="$VENV/.attnkit-requirements"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup-python: installing $REQ into $VENV (torch is ~5 GB the first time)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  echo "$want" >"$stamp"
fi
# Editable, no build isolation (the build tools are in the venv), no dependency resolution
# (installed above): an incremental CMake build in build-python/.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
  --no-deps -e . >"$VENV/.attnkit-install.log" 2>&1 || {
  echo "setup-python: pip install -e . failed:" >&2
  tail -n 40 "$VENV/.attnkit-install.log" >&2
  exit 1
}
"$VENV/bin/python" -c "import attnkit, attnkit.torch" || {
  echo "setup-python: import attnkit failed after installing" >&2
  exit 1
}
