#!/usr/bin/env bash
# Restore the KEY STORE from a backup-keys.sh file, then destroy again the keys of every
# account erased since that backup.
#
#   restore-keys.sh FILE [--no-reconcile]
#
# Stop every gateway first. The main database records every erasure (its tombstones), so
# `image-router vault reconcile` destroys their keys again before anything can open their
# data; it exits 1 listing live accounts with no key in FILE (created after it was taken:
# their sealed values, e-mail included, are lost).
# Both databases lost: restore the key store with --no-reconcile first, then the main
# database with restore-db.sh, which reconciles the two.
source "$(dirname "$(readlink -f "$0")")/common.sh"
[[ $# -ge 1 && $# -le 2 ]] || die "usage: restore-keys.sh FILE [--no-reconcile]"
reconcile=yes
if [[ $# -eq 2 ]]; then
  [[ $2 == --no-reconcile ]] || die "unknown argument $2"
  reconcile=no
fi
# In a subshell: the PG* variables it sets must not reach the gateway's commands.
(restore_from keys "$1")
if [[ $reconcile == yes ]]; then
  "$IMAGE_ROUTER" vault reconcile
fi
