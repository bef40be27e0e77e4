#!/bin/sh
# Enables the transit engine on the OpenBao server once it answers. faceseal init creates its
# key there (aes256-gcm96, derived, not exportable).
set -eu
BAO_TOKEN=$(cat /run/secrets/bao_token)
export BAO_TOKEN
until bao status >/dev/null 2>&1; do sleep 1; done
bao secrets list | grep -q '^transit/' || bao secrets enable transit
