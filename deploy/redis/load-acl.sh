#!/bin/sh
# Loads the Redis ACL user `bidlock` of bidlock.acl into a running Redis with ACL SETUSER
# (as an admin user), saves it when Redis has an aclfile, and checks that bidlock can log
# in with its password. Run it on every data node: ACLs are not replicated (a master and
# its replicas; every node of a cluster; not the sentinels). deploy/k8s/redis-acl-job.yaml
# runs it as a Job.
#
# Environment:
#   BIDLOCK_REDIS_PASSWORD  the password to give the user bidlock (required)
#   REDIS_HOST, REDIS_PORT  the server (127.0.0.1, 6379)
#   REDIS_ADMIN_USER        who loads it (default), with REDIS_ADMIN_PASSWORD (none)
#   REDIS_CLI_ARGS          more redis-cli arguments, e.g. "--tls --cacert /ca.pem"
#   BIDLOCK_ACL             the ACL file (bidlock.acl next to this script)
# Passwords go by environment, never on a command line (`ps` shows those): redis-cli reads
# REDISCLI_AUTH, and Redis is given only the SHA-256 of bidlock's password.
set -euf
acl=${BIDLOCK_ACL:-$(dirname "$0")/bidlock.acl}
: "${BIDLOCK_REDIS_PASSWORD:?set BIDLOCK_REDIS_PASSWORD, the password of the user bidlock}"
host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}
admin=${REDIS_ADMIN_USER:-default}
admin_pw=${REDIS_ADMIN_PASSWORD:-}
extra=${REDIS_CLI_ARGS:-}

# redis-cli as the admin (set -f above: the rules' patterns are passed as they are).
as_admin() {
  if [ -n "$admin_pw" ]; then
    REDISCLI_AUTH=$admin_pw redis-cli --no-auth-warning $extra -h "$host" -p "$port" --user "$admin" "$@"
  else
    redis-cli $extra -h "$host" -p "$port" "$@"
  fi
}

rules=$(sed -n 's/^user bidlock //p' "$acl")
if [ -z "$rules" ]; then
  echo "load-acl: no 'user bidlock' line in $acl" >&2
  exit 1
fi
hash=$(printf '%s' "$BIDLOCK_REDIS_PASSWORD" | sha256sum | cut -d' ' -f1)
# One word per rule: $rules is split on spaces on purpose.
set_user=$(as_admin ACL SETUSER bidlock $rules "#$hash" 2>&1)
if [ "$set_user" != OK ]; then
  echo "load-acl: ACL SETUSER on $host:$port refused: $set_user" >&2
  exit 1
fi
saved=$(as_admin ACL SAVE 2>&1 || true)
if [ "$saved" != OK ]; then
  echo "load-acl: not saved ($saved): the user lasts until Redis restarts (with an aclfile, ACL SAVE keeps it); run this again after a restart" >&2
fi
pong=$(REDISCLI_AUTH=$BIDLOCK_REDIS_PASSWORD redis-cli --no-auth-warning $extra -h "$host" -p "$port" --user bidlock PING 2>&1)
if [ "$pong" != PONG ]; then
  echo "load-acl: the user bidlock cannot log in on $host:$port: $pong" >&2
  exit 1
fi
echo "load-acl: user bidlock loaded on $host:$port"
