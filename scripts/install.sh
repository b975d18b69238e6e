#!/usr/bin/env bash
# scripts/install.sh [PREFIX] — install vmic, its man pages and shell
# completions (default PREFIX: /usr/local).
#
#   PREFIX/bin/vmic
#   PREFIX/share/man/man1/vmic*.1                   (one page per command)
#   PREFIX/share/bash-completion/completions/vmic
#   PREFIX/share/zsh/site-functions/_vmic
#   PREFIX/share/fish/vendor_completions.d/vmic.fish
#
# Builds the release binary first, unless VMIC=/path/to/vmic names one.
# DESTDIR is honoured, for packagers.
set -euo pipefail
PREFIX=${1:-/usr/local}
ROOT=${DESTDIR:-}$PREFIX
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${VMIC:-}" ]; then
    cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
    VMIC=$REPO/target/release/vmic
fi
install -d "$ROOT/bin" "$ROOT/share/man/man1" \
    "$ROOT/share/bash-completion/completions" \
    "$ROOT/share/zsh/site-functions" \
    "$ROOT/share/fish/vendor_completions.d"
install -m 0755 "$VMIC" "$ROOT/bin/vmic"
"$VMIC" man --out "$ROOT/share/man/man1" --quiet
"$VMIC" completions bash > "$ROOT/share/bash-completion/completions/vmic"
"$VMIC" completions zsh > "$ROOT/share/zsh/site-functions/_vmic"
"$VMIC" completions fish > "$ROOT/share/fish/vendor_completions.d/vmic.fish"
echo "installed vmic into $ROOT"
