#!/usr/bin/env bash
# Back up the MAIN database (accounts, ledger, usage; personal data only sealed).
#
#   backup-db.sh DEST_DIR [--keep-days N]     (default 35)
#
# Reads DATABASE_URL and DATA_DIR like the gateway (run it with the gateway's environment:
# the systemd unit image-router-backup-db.service does). PostgreSQL: pg_dump custom format;
# SQLite: a consistent copy through SQLite's backup API, while the gateway runs.
# DEST_DIR must not be where the key store's backups go (backup-keys.sh).
source "$(dirname "$(readlink -f "$0")")/common.sh"
[[ $# -ge 1 ]] || die "usage: backup-db.sh DEST_DIR [--keep-days N]"
dest=$1
keep=35
shift
while [[ $# -gt 0 ]]; do
  case $1 in
    --keep-days) keep=${2:-}; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
backup_to main "$dest" "$keep"
