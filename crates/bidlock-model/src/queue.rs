//! `queue.lua` (`crates/bidlock/src/backend/scripts/queue.lua`), shared by the scripts of
//! `Design::free_lock_to_first_waiter`: the first live waiter of the key's queue, and
//! handing the lock to it (rule 6, and `release.lua`'s handover).

use crate::bounds::Time;
use crate::redis::{raise, Scripts};
use crate::state::{HolderId, Lock, Msg, Redis, State, Token};

impl Scripts<'_> {
    /// `live_head(queue, waiters, now_ms, skip)` (queue.lua 14-31): takes dead entries, and
    /// `skip` (a releaser's own id), off the head of the queue; the first live waiter and
    /// its acquire, or `None` when no live waiter is queued (the queue may be empty now).
    pub(crate) fn live_head(
        &self,
        r: &mut Redis,
        now: Time,
        skip: Option<HolderId>,
    ) -> Option<(HolderId, usize)> {
        loop {
            // 16-19: ZRANGE queue 0 0.
            let head = *r.queue.first()?;
            // 20-27: HGET waiters head; live when its deadline >= now and it is not `skip`.
            // (Only generated ids queue: a given one would be nobody's waiter.)
            let live = r.entry(head).is_some_and(|d| d >= now) && Some(head) != skip;
            if let (true, Some(c)) = (live, self.client_of(head)) {
                return Some((head, c));
            }
            // 28-29: ZREM queue head; HDEL waiters head.
            r.zrem(head);
            r.hdel_entry(head);
        }
    }

    /// `hand_to(lock, queue, waiters, counter, keep, head, grant, channel)` (queue.lua
    /// 36-49): `head` (acquire `c`'s id) leaves the queue and holds the lock for its grant
    /// ttl with the next token, recorded in the `''` field and published on its manager's
    /// grant channel. Returns the token.
    pub(crate) fn hand_to(&self, s: &mut State, head: HolderId, c: usize) -> Token {
        let (now, grant) = (s.now, self.bounds.grant_ttl(c));
        let r = &mut s.redis;
        // 37-38: ZREM queue head; HDEL waiters head.
        r.zrem(head);
        r.hdel_entry(head);
        // 39-40: SET lock head PX grant; next token.
        let token = r.next_token();
        r.lock = Some(Lock {
            holder: head,
            expires: now + grant,
            token,
        });
        // 42-46: HSET waiters '' "head token" (a hash emptied above comes back without a
        // ttl), then PEXPIRE waiters grant + 5 s if its PTTL is less.
        if !r.waiters_exist() {
            r.waiters_ttl = None;
        }
        r.last_grant = Some((head, token));
        raise(&mut r.waiters_ttl, true, now + grant + self.bounds.slack);
        // 47: PUBLISH grants(head) "token len holder lockkey".
        let manager = self.bounds.clients[c].manager;
        s.publish(manager, Msg::Grant { id: head, token });
        token
    }
}
