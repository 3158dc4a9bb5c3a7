#!/usr/bin/env bash
# Fails when a workspace member declares a dependency its code never names. Cheaper than
# `cargo machete` (nothing to install) and precise enough for us: a crate is used when its
# name (with `_` for `-`) appears as a path in the member's Rust sources.
#
#   deploy/local/unused-deps.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

status=0
for manifest in */Cargo.toml; do
    member="$(dirname "$manifest")"
    # Names under [dependencies] and [dev-dependencies], up to the next table.
    deps="$(awk '/^\[(dev-)?dependencies\]/ { on = 1; next } /^\[/ { on = 0 } on && /^[a-zA-Z0-9_-]+/ { sub(/[ .=].*/, ""); print }' "$manifest")"
    for dep in $deps; do
        ident="${dep//-/_}"
        if ! grep -rqE "(^|[^a-zA-Z0-9_])${ident}(::|!|[[:space:]]*[;{,])" "$member" --include='*.rs'; then
            echo "unused-deps: $member declares \`$dep\` but no source names it" >&2
            status=1
        fi
    done
done
((status == 0)) && echo "unused-deps: every declared dependency is used"
exit "$status"
