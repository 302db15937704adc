#!/bin/sh
# Registers the namespace and the search attributes the dispatch workflows write.
#
# Runs in temporalio/admin-tools once the server's port is open. Idempotent: an existing
# namespace or search attribute counts as success, so the job runs on every `up`. Every wait is
# bounded (MAX_ATTEMPTS x RETRY_DELAY_SECONDS): a server that never becomes healthy fails the job,
# compose restarts it a few times (restart: on-failure), and the worker and starter, which wait
# for this job to succeed, never start against a half-configured namespace.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
# Used only when the namespace is created; change an existing one with
# `temporal operator namespace update --retention ...`.
RETENTION="${TEMPORAL_NAMESPACE_RETENTION:-30d}"
MAX_ATTEMPTS="${SETUP_MAX_ATTEMPTS:-30}"
RETRY_DELAY_SECONDS="${SETUP_RETRY_DELAY_SECONDS:-2}"

log() {
  echo "create-namespace: $*"
}

# retry DESCRIPTION COMMAND...: run COMMAND until it succeeds, at most MAX_ATTEMPTS times.
# Exit status 2 from COMMAND means "retrying cannot help" and stops at once.
retry() {
  what="$1"
  shift
  attempt=1
  while :; do
    if "$@"; then
      return 0
    else
      status=$?
    fi
    if [ "$status" -eq 2 ] || [ "$attempt" -ge "$MAX_ATTEMPTS" ]; then
      log "giving up on $what after attempt $attempt/$MAX_ATTEMPTS" >&2
      return 1
    fi
    log "$what: not ready (attempt $attempt/$MAX_ATTEMPTS), retrying in ${RETRY_DELAY_SECONDS}s"
    attempt=$((attempt + 1))
    sleep "$RETRY_DELAY_SECONDS"
  done
}

cluster_healthy() {
  temporal operator cluster health --address "$ADDRESS" >/dev/null 2>&1
}

ensure_namespace() {
  if temporal operator namespace describe --address "$ADDRESS" --namespace "$NAMESPACE" \
      >/dev/null 2>&1; then
    log "namespace '$NAMESPACE' already exists"
    return 0
  fi
  if output=$(temporal operator namespace create --address "$ADDRESS" \
      --namespace "$NAMESPACE" --retention "$RETENTION" 2>&1); then
    log "namespace '$NAMESPACE' created (retention $RETENTION)"
    return 0
  fi
  case "$output" in
    *"already exists"* | *AlreadyExists*)
      log "namespace '$NAMESPACE' already exists"
      return 0
      ;;
  esac
  echo "$output" >&2
  return 1
}

# ensure_search_attribute NAME TYPE
ensure_search_attribute() {
  sa_name="$1"
  sa_type="$2"
  if output=$(temporal operator search-attribute create --address "$ADDRESS" \
      --namespace "$NAMESPACE" --name "$sa_name" --type "$sa_type" 2>&1); then
    log "search attribute $sa_name ($sa_type) in place"
    return 0
  fi
  case "$output" in
    *"different type"*)
      # Registered by hand with another type: the workflows would fail to upsert it.
      echo "$output" >&2
      return 2
      ;;
    *"already exists"* | *AlreadyExists*)
      log "search attribute $sa_name ($sa_type) already registered"
      return 0
      ;;
  esac
  # Typically "namespace not found" for a few seconds after creating it (the server's namespace
  # cache has not refreshed yet): retried.
  echo "$output" >&2
  return 1
}

retry "cluster health at $ADDRESS" cluster_healthy
retry "namespace $NAMESPACE" ensure_namespace

# The names and types are the ones in dispatch/search_attributes.py.
retry "search attribute DispatchStatus" ensure_search_attribute DispatchStatus Keyword
retry "search attribute Preparer" ensure_search_attribute Preparer Keyword
retry "search attribute Reviewer" ensure_search_attribute Reviewer Keyword
retry "search attribute ClientId" ensure_search_attribute ClientId Keyword
retry "search attribute ServiceType" ensure_search_attribute ServiceType Keyword
retry "search attribute DueDate" ensure_search_attribute DueDate Datetime

log "namespace '$NAMESPACE' ready"
