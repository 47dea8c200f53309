#!/usr/bin/env bash
# Set up and start a throwaway Synapse (the reference Matrix homeserver) on
# loopback, for comparing Hearth against it (client checks, benchmarks).
#
# Usage: start_synapse.sh [PORT] [DIR]
#   PORT  TCP port to listen on, 127.0.0.1 only   (default 8008)
#   DIR   directory for config, SQLite db, logs    (default /tmp/synapse-PORT)
#
# Environment:
#   SYNAPSE_VENV      virtualenv to use/create      (default /opt/synapse-venv)
#   SYNAPSE_VERSION   pin matrix-synapse when installing (default: latest)
#   SERVER_NAME       Matrix server name            (default localhost)
#   SYNAPSE_LOG_LEVEL root log level                (default WARNING)
#   WAIT_SECONDS      how long to wait for startup  (default 120)
#   FEDERATION_PORT   also serve federation over TLS on FEDERATION_BIND:PORT
#                     (self-signed certificate; certificate checks and the
#                     private-address block turned off, for loopback tests).
#                     Set SERVER_NAME to FEDERATION_BIND:PORT so peers find it.
#   FEDERATION_BIND   address of the federation listener (default 127.0.0.2)
#   SYNAPSE_EXTRA_CONFIG  YAML appended to the overrides (e.g. "bcrypt_rounds: 4" to
#                     make a benchmark's set-up of thousands of users quicker)
#
# On success the last line on stdout is the base URL, e.g.
#   URL=$(./start_synapse.sh 8448 /tmp/syn)
# Everything else goes to stderr. Synapse runs daemonized; stop it with
#   kill "$(cat DIR/homeserver.pid)"
set -euo pipefail

PORT="${1:-8008}"
DIR="${2:-/tmp/synapse-$PORT}"
VENV="${SYNAPSE_VENV:-/opt/synapse-venv}"
SERVER_NAME="${SERVER_NAME:-localhost}"
LOG_LEVEL="${SYNAPSE_LOG_LEVEL:-WARNING}"
WAIT_SECONDS="${WAIT_SECONDS:-120}"
BASE_URL="http://127.0.0.1:${PORT}"

log() { echo "start_synapse: $*" >&2; }

case "$PORT" in
  ''|*[!0-9]*) log "PORT must be a number, got '$PORT'"; exit 2 ;;
esac

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PY="$VENV/bin/python"

# --- 1. virtualenv with matrix-synapse ------------------------------------
if ! [ -x "$PY" ] || ! "$PY" -c 'import synapse' >/dev/null 2>&1; then
  log "installing matrix-synapse into $VENV"
  if ! [ -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  "$PY" -m pip install --quiet --upgrade pip >&2
  if [ -n "${SYNAPSE_VERSION:-}" ]; then
    "$PY" -m pip install --quiet "matrix-synapse==${SYNAPSE_VERSION}" >&2
  else
    "$PY" -m pip install --quiet matrix-synapse >&2
  fi
fi
log "synapse $("$PY" -c 'import synapse; print(synapse.__version__)')"

# --- 2. already running from this directory? ------------------------------
PIDFILE="$DIR/homeserver.pid"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  if curl -fsS --max-time 2 "$BASE_URL/_matrix/client/versions" >/dev/null 2>&1; then
    log "already running (pid $(cat "$PIDFILE"))"
    echo "$BASE_URL"
    exit 0
  fi
  log "a synapse from $DIR is running (pid $(cat "$PIDFILE")) but not on port $PORT; stop it first"
  exit 1
fi

if curl -fsS --max-time 2 "$BASE_URL/_matrix/client/versions" >/dev/null 2>&1; then
  log "port $PORT already answers Matrix requests, but not from $DIR; refusing"
  exit 1
fi

# --- 3. config --------------------------------------------------------------
# Base config (secrets, signing key, log config) is generated once and kept,
# so restarts reuse the same database and keys. Our overrides go in a second
# file that is rewritten every time; Synapse lets later -c files override
# top-level keys of earlier ones.
BASE_CFG="$DIR/homeserver.yaml"
OVR_CFG="$DIR/overrides.yaml"
if ! [ -f "$BASE_CFG" ]; then
  log "generating base config in $DIR"
  (cd "$DIR" && "$PY" -m synapse.app.homeserver \
      --server-name "$SERVER_NAME" \
      --config-path "$BASE_CFG" \
      --config-directory "$DIR" \
      --data-directory "$DIR" \
      --generate-config --report-stats=no >&2)
fi

# Federation over TLS, only when asked for: a self-signed certificate, and the
# settings that let two servers on loopback talk (Synapse refuses private
# addresses and unverifiable certificates by default).
FED_CFG=""
if [ -n "${FEDERATION_PORT:-}" ]; then
  FED_BIND="${FEDERATION_BIND:-127.0.0.2}"
  if ! [ -f "$DIR/tls.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$FED_BIND" \
      -keyout "$DIR/tls.key" -out "$DIR/tls.crt" >/dev/null 2>&1
  fi
  FED_CFG="
  - port: $FEDERATION_PORT
    tls: true
    type: http
    x_forwarded: false
    bind_addresses: ['$FED_BIND']
    resources:
      - names: [federation, keys]
        compress: false
tls_certificate_path: \"$DIR/tls.crt\"
tls_private_key_path: \"$DIR/tls.key\"
federation_verify_certificates: false
ip_range_blacklist: []
federation_ip_range_blacklist: []
allow_public_rooms_over_federation: true"
fi

# Rate limits: high enough that benchmarks and tests never hit them.
RL="{per_second: 1000, burst_count: 1000}"
cat > "$OVR_CFG" <<EOF
# Written by start_synapse.sh; overrides keys of homeserver.yaml.
server_name: "$SERVER_NAME"
pid_file: "$PIDFILE"
public_baseurl: "$BASE_URL/"
listeners:
  - port: $PORT
    tls: false
    type: http
    x_forwarded: false
    bind_addresses: ['127.0.0.1']
    resources:
      - names: [client]
        compress: false$FED_CFG
database:
  name: sqlite3
  args:
    database: "$DIR/homeserver.db"
media_store_path: "$DIR/media_store"
log_config: "$DIR/log.config"
report_stats: false
enable_metrics: false
enable_registration: true
enable_registration_without_verification: true
trusted_key_servers: []
suppress_key_server_warning: true
url_preview_enabled: false
rc_message: $RL
rc_registration: $RL
rc_registration_token_validity: $RL
rc_login:
  address: $RL
  account: $RL
  failed_attempts: $RL
rc_admin_redaction: $RL
rc_joins:
  local: $RL
  remote: $RL
rc_joins_per_room: $RL
rc_invites:
  per_room: $RL
  per_user: $RL
  per_issuer: $RL
rc_3pid_validation: $RL
rc_presence:
  per_user: $RL
rc_room_creation: $RL
rc_reports: $RL
rc_delayed_event_mgmt: $RL
rc_federation:
  window_size: 1000
  sleep_limit: 1000
  sleep_delay: 0
  reject_limit: 1000
  concurrent: 1000
EOF
if [ -n "${SYNAPSE_EXTRA_CONFIG:-}" ]; then
  printf '%s\n' "$SYNAPSE_EXTRA_CONFIG" >> "$OVR_CFG"
fi

# Log config: a file in DIR at the chosen level (the generated one logs INFO).
cat > "$DIR/log.config" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: "$DIR/homeserver.log"
    encoding: utf8
loggers:
  synapse.storage.SQL:
    level: WARNING
root:
  level: $LOG_LEVEL
  handlers: [file]
disable_existing_loggers: false
EOF

# --- 4. start ----------------------------------------------------------------
log "starting synapse on $BASE_URL (dir $DIR)"
(cd "$DIR" && "$PY" -m synapse.app.homeserver \
    -c "$BASE_CFG" -c "$OVR_CFG" --daemonize >>"$DIR/stdout.log" 2>&1) || {
  log "synapse failed to start; tail of $DIR/stdout.log and homeserver.log:"
  tail -n 30 "$DIR/stdout.log" >&2 || true
  tail -n 30 "$DIR/homeserver.log" >&2 || true
  exit 1
}

# --- 5. wait for the client API ---------------------------------------------
deadline=$(( $(date +%s) + WAIT_SECONDS ))
until curl -fsS --max-time 2 "$BASE_URL/_matrix/client/versions" >/dev/null 2>&1; do
  if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "synapse exited during startup; tail of $DIR/homeserver.log:"
    tail -n 30 "$DIR/homeserver.log" >&2 || true
    exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "synapse did not answer /_matrix/client/versions within ${WAIT_SECONDS}s"
    tail -n 30 "$DIR/homeserver.log" >&2 || true
    exit 1
  fi
  sleep 0.5
done

log "up (pid $(cat "$PIDFILE" 2>/dev/null || echo '?')); stop with: kill \$(cat $PIDFILE)"
echo "$BASE_URL"
