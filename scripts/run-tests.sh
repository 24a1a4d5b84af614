#!/bin/sh
# make test: the whole suite in two lanes, one per core. The USB stick's firmware boots
# (tests/test_usb*.py: their own images under build/usb, their own namespaces), the arm64
# boots (tests/test_arm64_boot.py: aarch64 TCG, ~2.5 min with its image builds) and the real
# OS's chain boots (tests/test_os_self_hosting.py, ~5 min; tests/test_os_boot_chain.py; the OS
# image they share is built once, under build_lock; tests/test_os_image_arm64.py builds the
# arm64 image, ~4 min, and boots it) run beside everything else: each QEMU under
# TCG keeps one core busy, so one lane alone leaves the other core mostly idle. Measured on
# 2 cores from a fresh clone: main lane 24.7 min against 5.8 min before the OS boots moved,
# 21.5 min against 9.3 min after (21.9 min in all with lint); with the arm64 stick and OS
# image tests, 23.2 against 17.3 min (23.6 min in all). Both lanes must pass; the second
# lane's output follows the main lane's.
#   scripts/run-tests.sh PYTHON [PYTEST_ARGS...]
set -u
py=$1
shift
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 2
mkdir -p build
usb_log=build/test-usb-lane.log
usb_lane="tests/test_usb.py tests/test_usb_arm64.py tests/test_usb_write.py tests/test_arm64_boot.py
    tests/test_os_self_hosting.py tests/test_os_boot_chain.py tests/test_os_image_arm64.py"
# shellcheck disable=SC2086 # the lane's files and the caller's pytest arguments are words
"$py" -m pytest -q -p no:cacheprovider --basetemp=build/pytest-usb-lane $usb_lane "$@" \
    >"$usb_log" 2>&1 &
usb=$!
# A background job ignores Ctrl-C in a script: stop it with us.
trap 'kill "$usb" 2>/dev/null; wait "$usb" 2>/dev/null; exit 130' INT TERM
ignore=""
for file in $usb_lane; do ignore="$ignore --ignore=$file"; done
# shellcheck disable=SC2086
"$py" -m pytest -q $ignore "$@"
main=$?
wait "$usb"
lane=$?
trap - INT TERM
printf '\n== the USB stick lane (%s), exit %s:\n' "$usb_lane" "$lane"
cat "$usb_log"
[ "$main" = 0 ] && [ "$lane" = 0 ]
