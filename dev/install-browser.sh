#!/usr/bin/env bash
# Installs what the browser tests (tests/e2e) need from Debian, when it is missing: `chromium`
# (/usr/bin/chromium, required) and `fonts-noto-color-emoji` (optional: the page icons in the
# screenshots). Runs apt-get as root, or through sudo when that works without a password.
# Elsewhere it prints how to install chromium and exits 0, and the browser tests skip with that
# reason — except under CI (the CI variable set), where a browser that can't be had is an error.
# No `playwright install`: the tests drive /usr/bin/chromium through the Python playwright package.
set -uo pipefail

CHROMIUM="${CNNVIS_CHROMIUM:-/usr/bin/chromium}"  # the tests read the same variable
EMOJI_FONT=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf

packages=()
[ -x "$CHROMIUM" ] || packages+=(chromium)
[ -f "$EMOJI_FONT" ] || packages+=(fonts-noto-color-emoji)
[ ${#packages[@]} -eq 0 ] && exit 0

give_up() {
    echo "install-browser: $1" >&2
    if [ -x "$CHROMIUM" ]; then  # only the optional font is missing
        echo "install-browser: without an emoji font the page icons show as boxes in screenshots." >&2
        exit 0
    fi
    echo "install-browser: install it with: sudo apt-get install chromium   (Debian/Ubuntu)" >&2
    if [ -n "${CI:-}" ]; then
        echo "install-browser: CI is set, so this is an error." >&2
        exit 1
    fi
    echo "install-browser: the browser tests (tests/e2e) will be skipped." >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 || give_up "${packages[*]} missing and apt-get is not available."
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    give_up "${packages[*]} missing and installing needs root (no password-less sudo)."
fi

echo "install-browser: installing ${packages[*]} (apt-get)…"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq >/dev/null \
    && "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null \
    || give_up "apt-get could not install ${packages[*]}."
[ -x "$CHROMIUM" ] || give_up "apt-get ran but $CHROMIUM is still missing."
"$CHROMIUM" --version 2>/dev/null
