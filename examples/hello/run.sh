#!/usr/bin/env bash
# Builds examples/hello with pybuild, unpacks the image into a runtime bundle with
# `pybuild unpack`, and runs it with `pyrunc run`, printing the container's output.
# PYBUILD / PYRUNC override the commands (e.g. PYRUNC=runc to compare).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pybuild=${PYBUILD:-pybuild}
pyrunc=${PYRUNC:-pyrunc}
busybox=${BUSYBOX:-/bin/busybox}
work=$(mktemp -d /tmp/pybuild-hello-XXXXXX)
id="pybuild-hello-$$"
cleanup() {
  "$pyrunc" --root "$work/state" delete --force "$id" >/dev/null 2>&1 || true
  grep -F " $work/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

mkdir -p "$work/ctx"
cp "$here/Dockerfile" "$here/hello.sh" "$work/ctx/"
cp "$busybox" "$work/ctx/busybox"
"$pybuild" --root "$work/store" build --progress plain -t hello:latest "$work/ctx"
"$pybuild" --root "$work/store" unpack hello:latest "$work/bundle"
cd "$work/bundle"
"$pyrunc" --root "$work/state" run --bundle "$work/bundle" "$id"
