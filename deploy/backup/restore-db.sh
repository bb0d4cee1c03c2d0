#!/usr/bin/env bash
# Restore the MAIN database from a backup-db.sh file, then reconcile it with the key store.
#
#   restore-db.sh FILE
#
# Stop every gateway first. The key store is NOT touched: accounts erased since FILE was
# taken come back as rows, but their personal data stays unreadable (their data keys are
# gone). `image-router vault reconcile` then lists them and exits 1; after reading the
# list, erase them again with `image-router vault reconcile --erase`.
source "$(dirname "$(readlink -f "$0")")/common.sh"
[[ $# -eq 1 ]] || die "usage: restore-db.sh FILE"
# In a subshell: the PG* variables it sets must not reach the gateway's commands.
(restore_from main "$1")
# A backup from an older release: bring its schema up to this one.
"$IMAGE_ROUTER" db upgrade
"$IMAGE_ROUTER" vault reconcile
