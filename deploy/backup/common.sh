# Shared by the backup and restore scripts (sourced, not run).
#
# The main database and the key store are backed up by separate scripts into separate
# destinations (docs/deployment.md "Backups"): a backup of the main database must never
# sit beside the keys that open it, and key-store backups must age out before the erasure
# deadline (one month) so that erasure also reaches them.
set -euo pipefail

here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
PYTHON=${PYTHON:-python3}
IMAGE_ROUTER=${IMAGE_ROUTER:-image-router}

die() {
  echo "error: $*" >&2
  exit 1
}

# `locate main|keys`: DB_KIND and PG*/SQLITE_PATH of that database, in this shell.
locate() {
  local assignments
  assignments=$("$PYTHON" "$here/dburl.py" "$1") || exit 1
  eval "$assignments"
  export PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE PGSSLMODE 2>/dev/null || true
}

# `sqlite_copy FROM TO`: a consistent copy of a live SQLite database (its backup API:
# readers and the WAL are taken into account; a plain cp of a WAL database is not).
sqlite_copy() {
  "$PYTHON" - "$1" "$2" <<'PY'
import sqlite3, sys
source = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
target = sqlite3.connect(sys.argv[2])
with target:
    source.backup(target)
target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
target.close()
source.close()
PY
}

# `backup_to KIND DEST KEEP_DAYS`: one dump of database `KIND` (main|keys) into DEST,
# named image-router-KIND-<UTC time>.(dump|sqlite); dumps older than KEEP_DAYS removed.
backup_to() {
  local kind=$1 dest=$2 keep=$3 other stamp partial final
  [[ $keep =~ ^[0-9]+$ ]] || die "--keep-days must be a whole number of days"
  other=$([[ $kind == main ]] && echo keys || echo main)
  mkdir -p "$dest"
  # Kept apart: refuse a destination that already holds the other database's backups.
  if compgen -G "$dest/image-router-$other-*" >/dev/null; then
    die "$dest holds backups of the $other database; back up the $kind database elsewhere"
  fi
  locate "$kind"
  umask 077
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  partial="$dest/.image-router-$kind-$stamp.partial"
  trap 'rm -f "$partial"' EXIT
  if [[ $DB_KIND == postgresql ]]; then
    final="$dest/image-router-$kind-$stamp.dump"
    # Custom format: compressed, restored table by table with pg_restore.
    pg_dump --format=custom --no-owner --no-privileges --file="$partial"
  else
    final="$dest/image-router-$kind-$stamp.sqlite"
    [[ -f $SQLITE_PATH ]] || die "no database file at $SQLITE_PATH"
    sqlite_copy "$SQLITE_PATH" "$partial"
  fi
  mv "$partial" "$final"
  trap - EXIT
  # -mmin: KEEP_DAYS whole days; the newest dump is never older than that.
  find "$dest" -maxdepth 1 -type f -name "image-router-$kind-*" -mmin +$((keep * 1440)) -print -delete |
    sed 's/^/removed /'
  echo "$final"
}

# `restore_from KIND FILE`: put database KIND (main|keys) back as FILE holds it.
restore_from() {
  local kind=$1 file=$2
  [[ -f $file ]] || die "no backup file $file"
  case $(basename "$file") in
    image-router-"$kind"-*) ;;
    *) die "$file is not a backup of the $kind database (image-router-$kind-*)" ;;
  esac
  locate "$kind"
  if [[ $DB_KIND == postgresql ]]; then
    [[ $file == *.dump ]] || die "$file is not a pg_dump archive but the database is PostgreSQL"
    # Only into an empty database: tables a later migration added would survive a
    # restore over them and break the next `db upgrade`, and rows of two moments must
    # never mix.
    local tables
    tables=$(psql -XtAc "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") ||
      die "cannot connect to the $kind database $PGDATABASE on ${PGHOST:-localhost}"
    ((tables == 0)) || die "the $kind database $PGDATABASE is not empty ($tables tables):" \
      "drop and create it again (DROP DATABASE … ; CREATE DATABASE … OWNER …) first"
    pg_restore --no-owner --no-privileges --exit-on-error --single-transaction \
      --dbname="$PGDATABASE" "$file"
  else
    [[ $file == *.sqlite ]] || die "$file is not a SQLite copy but the database is SQLite"
    mkdir -p "$(dirname "$SQLITE_PATH")"
    # The gateway must be stopped: its connections would keep writing the old file. The
    # current file is kept aside, not deleted (with its WAL, which holds recent writes).
    if [[ -f $SQLITE_PATH ]]; then
      local aside
      aside="$SQLITE_PATH.before-restore-$(date -u +%Y%m%dT%H%M%SZ)"
      sqlite_copy "$SQLITE_PATH" "$aside"
      rm -f "$SQLITE_PATH" "$SQLITE_PATH-wal" "$SQLITE_PATH-shm"
      echo "kept the replaced database as $aside"
    fi
    sqlite_copy "$file" "$SQLITE_PATH.restoring"
    mv "$SQLITE_PATH.restoring" "$SQLITE_PATH"
  fi
  echo "restored the $kind database from $file"
}
