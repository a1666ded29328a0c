#!/bin/sh
# Makes the `busybox` base image the examples build on, from Debian's busybox-static (there is no
# Docker Hub here): a root filesystem of /bin/busybox and its applet links, imported into tbuild's
# store. Usage: examples/import-busybox.sh [NAME]   (default: busybox)
set -eu
name=${1:-busybox}
here=$(dirname "$(readlink -f "$0")")
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
"$here/../bin/tbuild" import "$rootfs" "$name" --change 'CMD ["sh"]'
