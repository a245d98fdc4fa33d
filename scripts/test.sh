#!/usr/bin/env bash
# Install everything the test suite needs, then run it.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: the Noto color emoji font (emoji dataset) and Debian's chromium (lab browser tests).
need=()
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "note: missing system packages (${need[*]}); tests that need them will be skipped" >&2
  fi
fi

# torch is named in the same pip command so pip takes the CPU build instead of a multi-GB CUDA one.
python -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[test]"
# Lint and type-check src/ first (settings and the backlog of exempt files: pyproject.toml).
python -m ruff check src
python -m mypy
exec python -m pytest "$@"
