#!/bin/sh
# vmic hook: keep an OpenNebula image datastore in step with the site's
# store. site.toml:  [hooks] command = "/path/to/contrib/hooks/opennebula.sh"
# Environment: VMIC_ONE_DATASTORE (default "default"); the usual ONE_AUTH /
# ONE_XMLRPC for the oneimage CLI.
#
# import   -> oneimage create --name vmic-ENDORSER-ID-VERSION --path PATH
#             --datastore DATASTORE --type OS
#             --description "vmic ENDORSER/ID@VERSION sha256:…"
#             (skipped when `oneimage show NAME` finds it)
# rewrite  -> the old bytes are removed; the import event that follows
#             brings the new ones
# revoke, expire, reject
#          -> oneimage delete NAME (absent: nothing to do)
# others   -> nothing.
#
# Idempotent: an event delivered twice changes nothing the second time.
set -eu
DATASTORE=${VMIC_ONE_DATASTORE:-default}
event=${VMIC_EVENT:?VMIC_EVENT is not set: run me as a vmic hook}
name="vmic-${VMIC_ENDORSER:-}-${VMIC_IMAGE_ID:-}-${VMIC_IMAGE_VERSION:-}"

exists() { oneimage show "$name" >/dev/null 2>&1; }
delete() { if exists; then oneimage delete "$name"; fi; }
create() {
    exists && return 0
    oneimage create --name "$name" --path "$VMIC_IMAGE_PATH" --datastore "$DATASTORE" \
        --type OS --description "vmic $VMIC_ENDORSER/$VMIC_IMAGE_ID@$VMIC_IMAGE_VERSION sha256:$VMIC_IMAGE_SHA256"
}

case "$event" in
    import) create ;;
    rewrite) delete ;;  # the import event that follows brings the new bytes
    revoke|expire|reject) delete ;;
    *) ;;
esac
