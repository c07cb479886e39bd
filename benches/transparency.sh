#!/usr/bin/env bash
# CPython's own regression tests plain, under `looptop run -q` and with the agent preloaded
# (LD_PRELOAD=$(looptop agent path)), their per-test outcomes compared (benches/transparency.py).
# Usage: benches/transparency.sh [--python 3.11 ...] [--quick] [--jobs N] [--confirm N] [NAME ...]
# Default: Python 3.11 and 3.12 (~/.pyenv/versions or pythonX.Y on PATH), test_asyncio.test_events
# test_asyncio.test_base_events test_signal test_subprocess test_selectors test_epoll test_poll
# test_gc.
# LOOPTOP=PATH uses that looptop instead of building a release one (the agent inside is a release
# build either way). Exit status 0 when no difference is reproducible.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${LOOPTOP:-}" ]; then
  cargo build --release -q
  LOOPTOP=target/release/looptop
fi
exec python3 benches/transparency.py --looptop "$(realpath "$LOOPTOP")" "$@"
