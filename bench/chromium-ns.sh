#!/usr/bin/env bash
# Chromium inside the network namespace named by MANIFOLD_NS (bench/slow-viewer.sh).
exec ip netns exec "${MANIFOLD_NS:?}" /usr/bin/chromium "$@"
