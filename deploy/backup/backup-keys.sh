#!/usr/bin/env bash
# Back up the KEY STORE (each account's wrapped data key), apart from the main database.
#
#   backup-keys.sh DEST_DIR [--keep-days N]   (default 14, at most 30)
#
# Reads DATA_KEYS_URL and DATA_DIR like the gateway. Erasure destroys an account's key in
# the key store; a key-store backup still holds it until the backup is deleted, so these
# backups must not outlive the erasure deadline (one month): --keep-days above 30 is
# refused. Take them often (hourly): an account created after the newest key-store backup
# loses its personal data if the key store has to be restored.
# DEST_DIR must be another place than the main database's backups (another bucket or host
# in practice), and PII_KEK must be stored with neither.
source "$(dirname "$(readlink -f "$0")")/common.sh"
[[ $# -ge 1 ]] || die "usage: backup-keys.sh DEST_DIR [--keep-days N]"
dest=$1
keep=14
shift
while [[ $# -gt 0 ]]; do
  case $1 in
    --keep-days) keep=${2:-}; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ $keep =~ ^[0-9]+$ ]] || die "--keep-days must be a whole number of days"
((keep <= 30)) || die "--keep-days $keep: key-store backups must be gone within the 30-day erasure deadline"
backup_to keys "$dest" "$keep"
