#!/bin/sh
# vmic hook: keep a libvirt storage pool in step with the site's store.
# site.toml:  [hooks] command = "/path/to/contrib/hooks/libvirt-pool.sh"
# Environment: VMIC_LIBVIRT_POOL (the pool, default "vmic"),
#              VMIC_LIBVIRT_URI (default qemu:///system).
#
# import   -> virsh vol-create-as POOL NAME SIZE --format FORMAT
#             virsh vol-upload --pool POOL NAME PATH      (NAME:
#             vmic-ENDORSER-ID-VERSION.EXT; skipped when the volume exists)
#             virsh pool-refresh POOL
# rewrite  -> the old bytes are removed; the import event that follows
#             brings the new ones
# revoke, expire, reject
#          -> virsh vol-delete --pool POOL NAME (absent: nothing to do)
# others   -> nothing.
#
# Idempotent: an event delivered twice changes nothing the second time.
set -eu
POOL=${VMIC_LIBVIRT_POOL:-vmic}
URI=${VMIC_LIBVIRT_URI:-qemu:///system}
event=${VMIC_EVENT:?VMIC_EVENT is not set: run me as a vmic hook}
case "${VMIC_IMAGE_FORMAT:-}" in
    qcow2|raw|vmdk|vhd|vhdx|iso) ext=$VMIC_IMAGE_FORMAT ;;
    *) ext=img ;;
esac
name="vmic-${VMIC_ENDORSER:-}-${VMIC_IMAGE_ID:-}-${VMIC_IMAGE_VERSION:-}.$ext"
virsh() { command virsh -q -c "$URI" "$@"; }

exists() { virsh vol-info --pool "$POOL" "$name" >/dev/null 2>&1; }

delete() {
    if exists; then virsh vol-delete --pool "$POOL" "$name" >/dev/null; fi
}

create() {
    exists && return 0
    format=raw
    case "$ext" in qcow2|vmdk|vhd|vhdx|iso) format=$ext ;; esac
    virsh vol-create-as "$POOL" "$name" "$VMIC_IMAGE_SIZE" --format "$format" >/dev/null
    if ! virsh vol-upload --pool "$POOL" "$name" "$VMIC_IMAGE_PATH"; then
        virsh vol-delete --pool "$POOL" "$name" >/dev/null 2>&1 || true
        exit 1
    fi
    virsh pool-refresh "$POOL" >/dev/null
}

case "$event" in
    import) create ;;
    rewrite) delete ;;  # the import event that follows brings the new bytes
    revoke|expire|reject) delete ;;
    *) ;;
esac
