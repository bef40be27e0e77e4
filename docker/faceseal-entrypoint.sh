#!/bin/sh
# First start: create the vault (PostgreSQL store, KEK in OpenBao transit) and write the first
# admin's API key to a 0600 file in the vault volume, to be read once and deleted. Later starts
# find vault.json and go straight to the command (faceseal serve).
set -eu
if [ ! -f "$FACESEAL_HOME/vault.json" ]; then
  faceseal init \
    --vault "$FACESEAL_HOME" \
    --store "$FACESEAL_STORE_URL" \
    --admin-url "$FACESEAL_DB_ADMIN_URL" \
    --key-uri "$FACESEAL_KEY_URI" \
    --write-key "$FACESEAL_HOME/../first-admin.key"
  echo "faceseal: vault created; the first admin's API key is in first-admin.key (read it once, then delete it)" >&2
fi
exec "$@"
