#!/bin/bash
# The first process of a Ganeti lab node (../shared/ganeti-lab.md §2): run by
# `unshare --mount --uts --net --propagation private`, it makes this mount
# namespace the node's, prints "ready" and holds the namespaces until killed.
# usage: node.sh NAME LAB-DIR
set -euo pipefail
name=$1 lab=$2
node=$lab/$name
hostname "$name.gnt.test"
mount --make-rprivate /
# Ganeti's bridge check reads /sys/class/net: this namespace's.
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mkdir -p /run/lock /run/sshd /run/ganeti
for d in var/lib/ganeti var/log/ganeti etc/ganeti etc/ssh root srv usr/local/sbin; do
  mount --bind "$node/$d" "/$d"
done
mkdir -p /srv/ganeti/file-storage /srv/ganeti/shared-file-storage
mount --bind "$lab/shared" /srv/ganeti/shared-file-storage
mount --bind "$lab/hosts" /etc/hosts
# The node's own copy of Ganeti's Python package: installing our class on
# one node leaves the others (and the machine) alone.
mount --bind "$node/ganeti-pkg" /usr/share/ganeti/3.0
ip link set lo up
echo ready
# Not a wait for anything: this process holds the node's namespaces until
# the lab kills it by its pid.
exec sleep infinity
