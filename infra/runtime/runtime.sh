#!/bin/sh
# Example runtime for deployplan: configured only by RUNTIME_* environment
# variables (see infra/ENV_SCHEMA.md), no defaults, no config files.
# Runs as PID 1 under busybox sh, which ignores SIGTERM unless trapped.

HEALTH_FILE=/tmp/healthy
EX_CONFIG=78

log() { echo "runtime: $*"; }
problem() { echo "runtime: $*" >&2; }

stop_signal=
on_signal() { stop_signal=$1; }
trap 'on_signal SIGTERM' TERM
trap 'on_signal SIGINT' INT

log "starting"
log "reading configuration"

missing=
invalid=
add_missing() { missing="${missing:+$missing, }$1"; problem "$1 is not set"; }
add_invalid() { invalid="${invalid:+$invalid, }$1"; problem "$1 is invalid: $2"; }

if [ -z "${RUNTIME_API_TOKEN:-}" ]; then
    add_missing RUNTIME_API_TOKEN
elif [ "${#RUNTIME_API_TOKEN}" -lt 16 ]; then
    # The value is a secret: say what is wrong, never show any of it.
    add_invalid RUNTIME_API_TOKEN "must be at least 16 characters"
fi

if [ -z "${RUNTIME_ENV:-}" ]; then
    add_missing RUNTIME_ENV
else
    case "$RUNTIME_ENV" in
        dev | prod) ;;
        *) add_invalid RUNTIME_ENV "'$RUNTIME_ENV' is not one of: dev, prod" ;;
    esac
fi

if [ -z "${RUNTIME_LOG_LEVEL:-}" ]; then
    add_missing RUNTIME_LOG_LEVEL
else
    case "$RUNTIME_LOG_LEVEL" in
        debug | info | warning | error) ;;
        *) add_invalid RUNTIME_LOG_LEVEL "'$RUNTIME_LOG_LEVEL' is not one of: debug, info, warning, error" ;;
    esac
fi

case "${RUNTIME_FAULT:-}" in
    "" | crash-after-2s | unhealthy) ;;
    *) add_invalid RUNTIME_FAULT "'$RUNTIME_FAULT' is not one of: crash-after-2s, unhealthy (or unset)" ;;
esac

if [ -n "$missing$invalid" ]; then
    summary=
    [ -n "$missing" ] && summary="missing $missing"
    [ -n "$invalid" ] && summary="${summary:+$summary; }invalid $invalid"
    problem "refusing to start: $summary"
    exit "$EX_CONFIG"
fi

log "configuration ok (env=$RUNTIME_ENV, log_level=$RUNTIME_LOG_LEVEL, api token set)"
[ "$RUNTIME_LOG_LEVEL" = debug ] && log "debug: pid $$, health file $HEALTH_FILE"

if [ "${RUNTIME_FAULT:-}" = unhealthy ]; then
    log "fault rehearsal: RUNTIME_FAULT=unhealthy, the healthcheck will fail"
else
    : >"$HEALTH_FILE" || { problem "cannot create $HEALTH_FILE"; exit 1; }
fi
[ "${RUNTIME_FAULT:-}" = crash-after-2s ] && log "fault rehearsal: RUNTIME_FAULT=crash-after-2s, exiting 1 in 2 seconds"
log "ready"

# Sleep in the background and wait for it, so a trapped signal interrupts
# the wait at once instead of after the sleep.
elapsed=0
while [ -z "$stop_signal" ]; do
    sleep 1 &
    wait $!
    [ -n "$stop_signal" ] && { kill $! 2>/dev/null; break; }
    elapsed=$((elapsed + 1))
    if [ "${RUNTIME_FAULT:-}" = crash-after-2s ] && [ "$elapsed" -ge 2 ]; then
        rm -f "$HEALTH_FILE"
        problem "fault rehearsal: crashing (RUNTIME_FAULT=crash-after-2s)"
        exit 1
    fi
done

rm -f "$HEALTH_FILE"
log "stopping ($stop_signal)"
exit 0
