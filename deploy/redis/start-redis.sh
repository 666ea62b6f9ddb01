#!/bin/sh
# Starts Redis with the ACL users of deploy/compose.yaml, written at start from
# bidlock.acl and the secrets (no password is ever written in the repository, and only
# SHA-256 hashes of them reach the file Redis loads):
#   default  may only PING, without a password: the container's health check;
#   bidlock  the rules of bidlock.acl, with the password in $BIDLOCK_REDIS_PASSWORD_FILE;
#   admin    everything, with the password in $REDIS_ADMIN_PASSWORD_FILE (when present):
#            for operators (`redis-cli --user admin`, with REDISCLI_AUTH set).
# A trailing newline in a password file is not part of the password.
#
# Usage: start-redis.sh COMMAND [ARGS...]: runs COMMAND ARGS... --aclfile FILE, e.g.
#   start-redis.sh docker-entrypoint.sh redis-server --appendonly yes
# Environment (defaults are the compose file's paths):
#   BIDLOCK_ACL                  bidlock.acl (/etc/bidlock/redis/bidlock.acl)
#   BIDLOCK_REDIS_PASSWORD_FILE  /run/secrets/bidlock_redis_password
#   REDIS_ADMIN_PASSWORD_FILE    /run/secrets/redis_admin_password
#   BIDLOCK_ACL_OUT              the file Redis loads (/tmp/bidlock-users.acl)
set -eu
acl=${BIDLOCK_ACL:-/etc/bidlock/redis/bidlock.acl}
bidlock_pw=${BIDLOCK_REDIS_PASSWORD_FILE:-/run/secrets/bidlock_redis_password}
admin_pw=${REDIS_ADMIN_PASSWORD_FILE:-/run/secrets/redis_admin_password}
out=${BIDLOCK_ACL_OUT:-/tmp/bidlock-users.acl}

# The SHA-256 of a password file's content, without its trailing newlines.
hash() { printf '%s' "$(cat "$1")" | sha256sum | cut -d' ' -f1; }

if [ ! -s "$bidlock_pw" ]; then
  echo "start-redis: no password for the user bidlock in $bidlock_pw" >&2
  exit 1
fi
rules=$(sed -n 's/^user bidlock //p' "$acl")
if [ -z "$rules" ]; then
  echo "start-redis: no 'user bidlock' line in $acl" >&2
  exit 1
fi
umask 077
{
  echo "user default on nopass -@all +ping"
  echo "user bidlock $rules #$(hash "$bidlock_pw")"
  if [ -s "$admin_pw" ]; then
    echo "user admin on #$(hash "$admin_pw") ~* &* +@all"
  fi
} >"$out"
# The official image's entrypoint runs Redis as the user redis: it must read the file.
if [ "$(id -u)" = 0 ] && id redis >/dev/null 2>&1; then
  chown redis "$out"
fi
exec "$@" --aclfile "$out"
