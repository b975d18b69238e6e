#!/bin/sh
# vmic hook: keep an OpenStack Glance image service in step with the site's
# store. site.toml:  [hooks] command = "/path/to/contrib/hooks/glance.sh"
#
# import   -> openstack image create vmic-ENDORSER-ID-VERSION --file PATH
#             --disk-format FORMAT --container-format bare
#             --property vmic_endorser=… vmic_id=… vmic_version=… vmic_sha256=…
#             (skipped when an image with those four properties exists)
# rewrite  -> the old bytes are removed; the import event that follows
#             brings the new ones
# revoke, expire, reject
#          -> openstack image delete <every image with vmic_endorser, vmic_id,
#             vmic_version of the event> (none: nothing to do)
# others   -> nothing.
#
# Idempotent: an event delivered twice changes nothing the second time.
# Credentials: the usual OS_* variables (or clouds.yaml) in vmic's
# environment; VMIC_OPENSTACK overrides the command, for example
#   VMIC_OPENSTACK="openstack --os-auth-type none --os-endpoint http://glance:9292"
set -eu
OPENSTACK=${VMIC_OPENSTACK:-openstack}
event=${VMIC_EVENT:?VMIC_EVENT is not set: run me as a vmic hook}

ours() { # the Glance ids of this event's image (and of any extra property given)
    $OPENSTACK image list -f value -c ID \
        --property "vmic_endorser=$VMIC_ENDORSER" \
        --property "vmic_id=$VMIC_IMAGE_ID" \
        --property "vmic_version=$VMIC_IMAGE_VERSION" "$@"
}

delete_ours() {
    for id in $(ours); do
        $OPENSTACK image delete "$id"
    done
}

disk_format() {
    case "$VMIC_IMAGE_FORMAT" in
        qcow2|raw|vmdk|vhd|vhdx|iso) echo "$VMIC_IMAGE_FORMAT" ;;
        *) echo "vmic glance hook: format $VMIC_IMAGE_FORMAT has no Glance disk format; not uploaded" >&2; exit 0 ;;
    esac
}

create() {
    format=$(disk_format)
    existing=$(ours --property "vmic_sha256=$VMIC_IMAGE_SHA256")
    [ -n "$existing" ] && return 0
    $OPENSTACK image create "vmic-$VMIC_ENDORSER-$VMIC_IMAGE_ID-$VMIC_IMAGE_VERSION" \
        --file "$VMIC_IMAGE_PATH" --disk-format "$format" --container-format bare \
        --property "vmic_endorser=$VMIC_ENDORSER" \
        --property "vmic_id=$VMIC_IMAGE_ID" \
        --property "vmic_version=$VMIC_IMAGE_VERSION" \
        --property "vmic_sha256=$VMIC_IMAGE_SHA256" >/dev/null
}

case "$event" in
    import) create ;;
    rewrite) delete_ours ;;  # the import event that follows brings the new bytes
    revoke|expire|reject) delete_ours ;;
    *) ;;
esac
