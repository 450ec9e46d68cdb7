#!/usr/bin/env bash
# The demo: boots small real guests under ppnd and shows the pool rebalancing.
echo "demo: the balloon controller (ppnd) is not built yet; there is nothing real to show." >&2
exit 1
