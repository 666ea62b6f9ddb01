//! The scripts, each one atomic step on the one Redis (`crates/bidlock/src/backend/scripts/`):
//! as the code has them now (`Design::CURRENT`; the comments name the Lua lines), as the
//! earlier HANDOVER.md stated them (the comments name its steps), and with each hole's flag
//! putting back what the code before issue 20 did. `now` is the server's `TIME`. The queue
//! helpers the scripts share now (`queue.lua`) are in `queue`.
//!
//! Key lifetimes follow Redis: a hash or zset whose last field goes is deleted (and its
//! ttl with it); writing a field of a missing key creates it without a ttl; `PEXPIRE` of a
//! missing key does nothing. "Raise" is the scripts' `if PTTL < x then PEXPIRE x` (a key
//! without a ttl has PTTL -1, so it gets one).

use crate::bounds::{Bounds, Time};
use crate::design::Design;
use crate::state::{HolderId, Lock, Mode, Msg, Redis, RefreshAnswer, State, Token, TryAnswer};

/// The scripts of one design, with the bounds' durations.
#[derive(Debug, Clone, Copy)]
pub struct Scripts<'a> {
    /// Which holes are open.
    pub design: Design,
    /// The durations (ttls, entry life, slack) and who is who.
    pub bounds: &'a Bounds,
}

pub(crate) fn raise(ttl: &mut Option<Time>, exists: bool, at: Time) {
    if exists {
        *ttl = Some(ttl.map_or(at, |t| t.max(at)));
    }
}

impl Redis {
    pub(crate) fn waiters_exist(&self) -> bool {
        !self.waiters.is_empty() || self.last_grant.is_some()
    }

    /// `HSET waiters id deadline` (creates the hash, without a ttl, if missing).
    pub(crate) fn hset_entry(&mut self, id: HolderId, deadline: Time) {
        if !self.waiters_exist() {
            self.waiters_ttl = None;
        }
        match self.waiters.binary_search_by_key(&id, |e| e.0) {
            Ok(i) => self.waiters[i].1 = deadline,
            Err(i) => self.waiters.insert(i, (id, deadline)),
        }
    }

    /// `HGET waiters id`.
    pub(crate) fn entry(&self, id: HolderId) -> Option<Time> {
        self.waiters.iter().find(|e| e.0 == id).map(|e| e.1)
    }

    /// `HDEL waiters id`.
    pub(crate) fn hdel_entry(&mut self, id: HolderId) {
        self.waiters.retain(|e| e.0 != id);
        if !self.waiters_exist() {
            self.waiters_ttl = None;
        }
    }

    /// `HDEL waiters ''`.
    pub(crate) fn hdel_last(&mut self) {
        self.last_grant = None;
        if !self.waiters_exist() {
            self.waiters_ttl = None;
        }
    }

    /// `ZADD queue NX arrival id`.
    pub(crate) fn zadd(&mut self, id: HolderId) {
        if self.queue.is_empty() {
            self.queue_ttl = None;
        }
        if !self.queue.contains(&id) {
            self.queue.push(id);
        }
    }

    /// `ZREM queue id`: whether it was there.
    pub(crate) fn zrem(&mut self, id: HolderId) -> bool {
        let before = self.queue.len();
        self.queue.retain(|q| *q != id);
        if self.queue.is_empty() {
            self.queue_ttl = None;
        }
        self.queue.len() < before
    }

    /// `if ZREM queue id == 1 then HDEL waiters id end` (a waiter leaving).
    pub(crate) fn leave_queue(&mut self, id: HolderId) {
        if self.zrem(id) {
            self.hdel_entry(id);
        }
    }

    pub(crate) fn next_token(&mut self) -> Token {
        // hlc.lua: above the counter (the clock part only makes tokens jump).
        self.counter += 1;
        self.counter
    }

    /// Expiry: every key whose ttl ran out by `now` is gone; entry deadlines already
    /// passed read as 0 (the scripts only compare them with `now`, which only grows).
    pub fn expire(&mut self, now: Time) {
        if self.lock.is_some_and(|l| l.expires <= now) {
            self.lock = None;
        }
        if self.marker.is_some_and(|t| t <= now) {
            self.marker = None;
        }
        if self.queue_ttl.is_some_and(|t| t <= now) {
            self.queue.clear();
            self.queue_ttl = None;
        }
        if self.waiters_ttl.is_some_and(|t| t <= now) {
            self.waiters.clear();
            self.last_grant = None;
            self.waiters_ttl = None;
        }
        for e in &mut self.waiters {
            if e.1 < now {
                e.1 = 0;
            }
        }
    }
}

impl Scripts<'_> {
    /// Whether the marker is kept: hole 4's release and today's release and completion
    /// (rule 3 as implemented) read it. Otherwise no script reads it and it is always
    /// written with a ttl, so it is left out of the state.
    pub(crate) fn marker_read(&self) -> bool {
        self.design.release_publishes_only_when_waited || self.design.publish_when_waited_or_told
    }

    /// `SET marker 1 PX ...` until `at`.
    fn mark(&self, r: &mut Redis, at: Time) {
        if self.marker_read() {
            r.marker = Some(at);
        }
    }

    pub(crate) fn client_of(&self, id: HolderId) -> Option<usize> {
        match id {
            HolderId::Gen { client, .. } => Some(usize::from(client)),
            HolderId::Given(_) => None,
        }
    }

    /// `acquire.lua`, one item: acquire `c` tries with `id` and `mode`.
    pub fn acquire(
        &self,
        s: &mut State,
        c: usize,
        id: HolderId,
        mode: Mode,
        behind: bool,
    ) -> TryAnswer {
        let (now, b) = (s.now, self.bounds);
        let (ttl, life, slack) = (b.clients[c].ttl, b.entry_life, b.slack);
        // Step 1 (acquire.lua 36-42): check_done (every acquire, with completion in the
        // bounds) and a record.
        if s.redis.done && b.clients[c].checks_done {
            return TryAnswer::Done;
        }
        // Step 2 (acquire.lua 47-56, rule 6): the lock is free and the queue exists: its first
        // live waiter (dead entries dropped) is handed the lock, unless that is `holder`.
        // (`Design::acquire_rule_6_sees_the_record`, proposed: not once there is a record.)
        let spared = self.design.acquire_rule_6_sees_the_record && s.redis.done;
        if self.design.free_lock_to_first_waiter && s.redis.lock.is_none() && !spared {
            if let Some((head, h)) = self.live_head(&mut s.redis, now, None) {
                if head != id {
                    self.hand_to(s, head, h);
                }
            }
        }
        let r = &mut s.redis;
        // Step 3 (57-66): SET lock holder NX PX ttl -> next token.
        let Some(lock) = r.lock else {
            let token = r.next_token();
            r.lock = Some(Lock {
                holder: id,
                expires: now + ttl,
                token,
            });
            // waiters_behind (59-61): SET marker 1 PX ttl + 5000.
            if behind {
                self.mark(r, now + ttl + slack);
            }
            // stay (62-64): ZREM queue holder, then HDEL waiters holder.
            if mode == Mode::Stay {
                r.leave_queue(id);
            }
            return TryAnswer::Acquired(token);
        };
        // Step 5 (72-78): the lock is this holder's, mode stay (a join's fresh id is never
        // there), and '' names it: Granted.
        if lock.holder == id && mode != Mode::No {
            if let Some((to, token)) = r.last_grant {
                if to == id {
                    return TryAnswer::Granted(token);
                }
            }
        }
        // Step 6 (81-84): SET marker 1 PX pttl + 5000.
        self.mark(r, lock.expires + slack);
        // Before issue 20 the script joined for any mode but '0' (ZADD NX: a re-queue of a
        // used id).
        let join = mode == Mode::Join || (mode == Mode::Stay && self.design.id_outlives_try);
        let stay = mode == Mode::Stay && r.queue.contains(&id);
        if join || stay {
            // (86-94) join: ZADD queue NX arrival holder; both: HSET waiters holder
            // deadline|grant|channel; raise queue and waiters to marker_life + entry life.
            r.zadd(id);
            r.hset_entry(id, now + life);
            let at = lock.expires + slack + life;
            raise(&mut r.queue_ttl, true, at);
            raise(&mut r.waiters_ttl, true, at);
        }
        let queued = if self.design.id_outlives_try {
            // Before issue 20 the client read "queued" from its own mode, not the script.
            mode != Mode::No
        } else {
            r.queue.contains(&id)
        };
        TryAnswer::Held { queued }
    }

    /// `refresh.lua`: acquire `id` says it still waits.
    pub fn refresh(&self, s: &mut State, id: HolderId) -> RefreshAnswer {
        let (now, b) = (s.now, self.bounds);
        let r = &mut s.redis;
        let holder = r.lock.map(|l| l.holder);
        // Step 1 (refresh.lua 19-25): GET lock == holder and '' names holder: Granted.
        if holder == Some(id) {
            if let Some((to, token)) = r.last_grant {
                if to == id {
                    return RefreshAnswer::Granted(token);
                }
            }
        }
        let queued = r.queue.contains(&id);
        if self.design.id_outlives_try {
            // Before issue 20: `if not holder or not ZSCORE` -> {0, 0}: "not queued".
            if holder.is_none() || !queued {
                return RefreshAnswer::Gone;
            }
        } else {
            // Step 2 (refresh.lua 26-28): not in the queue: Gone.
            if !queued {
                return RefreshAnswer::Gone;
            }
            // Step 3 (30-43).
            if holder.is_none() && self.design.refresh_sees_the_record && s.redis.done {
                // Proposed: a free lock of a posting with a record goes to nobody; the
                // tenure ends (ZREM, HDEL: Gone), and the next try sees the record.
                s.redis.leave_queue(id);
                return RefreshAnswer::Gone;
            }
            if holder.is_none() && self.design.free_lock_to_first_waiter {
                // Rule 6: the first live waiter is handed the free lock: this one
                // (Granted), or another (go on, unless this one's dead entry went too).
                let Some((head, h)) = self.live_head(&mut s.redis, now, None) else {
                    return RefreshAnswer::Gone;
                };
                let token = self.hand_to(s, head, h);
                if head == id {
                    return RefreshAnswer::Granted(token);
                }
                if !s.redis.queue.contains(&id) {
                    return RefreshAnswer::Gone;
                }
            } else if holder.is_none() {
                // The earlier design's step 3: the lock is free: Free.
                return RefreshAnswer::Free;
            }
        }
        let r = &mut s.redis;
        // Step 4 (44-52): HSET waiters holder (now + life)|grant|channel; raise both ttls.
        r.hset_entry(id, now + b.entry_life);
        let at = now + b.entry_life + b.slack;
        let exists = !r.queue.is_empty();
        raise(&mut r.queue_ttl, exists, at);
        raise(&mut r.waiters_ttl, true, at);
        RefreshAnswer::Queued
    }

    /// `release.lua`, one item: releases `id`; `tell`: publish even when nobody waits (a
    /// release by holder id, or of a holder id the caller chose). Returns the lock it
    /// removed or replaced.
    pub fn release(&self, s: &mut State, id: HolderId, tell: bool) -> Option<Lock> {
        let now = s.now;
        let r = &mut s.redis;
        // Step 1 (release.lua 31-37): GET lock ~= holder: a waiter leaving takes its place
        // out of the queue.
        let Some(lock) = r.lock.filter(|l| l.holder == id) else {
            r.leave_queue(id);
            return None;
        };
        // Step 2 (40-47, rule 3): EXISTS marker queue == 0 -> DEL lock, a message if
        // `tell`. Hole 4 (before issue 20): the same, never a message.
        let told = self.design.publish_when_waited_or_told;
        if (told || self.design.release_publishes_only_when_waited)
            && r.marker.is_none()
            && r.queue.is_empty()
        {
            r.lock = None;
            if told && tell {
                self.publish_released(s);
            }
            return Some(lock);
        }
        if self.design.free_lock_to_first_waiter {
            // Step 3 (51-62): no record: `live_head` (skipping the releaser's own id) and
            // `hand_to`; the release is published too only with `tell`.
            if !r.queue.is_empty() && !r.done {
                if let Some((head, h)) = self.live_head(&mut s.redis, now, Some(id)) {
                    self.hand_to(s, head, h);
                    if (told && tell) || self.design.handover_publishes_release {
                        self.publish_released(s);
                    }
                    return Some(lock);
                }
            }
        } else {
            // The earlier design's step 2: no record, and a live entry -> hand over.
            let live = |r: &Redis, q: HolderId| q != id && r.entry(q).is_some_and(|d| d >= now);
            if !r.done && r.queue.iter().any(|q| live(r, *q)) {
                self.hand_over(s, id);
                return Some(lock);
            }
        }
        // Step 4 (63-70): DEL lock marker; DEL waiters if the queue is empty, else HDEL '';
        // PUBLISH released. (The earlier design's step 3.)
        let r = &mut s.redis;
        r.lock = None;
        r.marker = None;
        if r.queue.is_empty() {
            r.waiters.clear();
            r.last_grant = None;
            r.waiters_ttl = None;
        } else {
            r.hdel_last();
        }
        self.publish_released(s);
        Some(lock)
    }

    /// `release.lua`'s `hand_over`: pop entries from the head, dropping dead ones, until
    /// the first live one, and give it the lock for its grant ttl.
    fn hand_over(&self, s: &mut State, releaser: HolderId) {
        let now = s.now;
        let r = &mut s.redis;
        while let Some(&head) = r.queue.first() {
            // ZREM queue head; HGET then HDEL waiters head.
            r.zrem(head);
            let entry = r.entry(head);
            r.hdel_entry(head);
            let (Some(deadline), Some(c)) = (entry, self.client_of(head)) else {
                continue;
            };
            if deadline < now || head == releaser {
                continue;
            }
            // SET lock head PX grant; next token.
            let grant = self.bounds.grant_ttl(c);
            let token = r.next_token();
            r.lock = Some(Lock {
                holder: head,
                expires: now + grant,
                token,
            });
            // HSET waiters '' "head token" (a missing hash comes back without a ttl);
            // then raise its ttl to grant ttl + 5 s, which the script before issue 20 did not.
            if !r.waiters_exist() {
                r.waiters_ttl = None;
            }
            r.last_grant = Some((head, token));
            if !self.design.waiters_without_ttl {
                raise(&mut r.waiters_ttl, true, now + grant + self.bounds.slack);
            }
            // PUBLISH grants(head) "token len holder lockkey".
            let manager = self.bounds.clients[c].manager;
            s.publish(manager, Msg::Grant { id: head, token });
            if self.design.handover_publishes_release {
                let named = self.design.notice_names_new_holder.then_some(head);
                self.publish(s, named);
            }
            return;
        }
    }

    /// `force_release.lua`: DEL lock marker; PUBLISH released. Returns the lock removed.
    pub fn force_release(&self, s: &mut State) -> Option<Lock> {
        let lock = s.redis.lock.take()?;
        s.redis.marker = None;
        self.publish_released(s);
        Some(lock)
    }

    /// `complete.lua` for `id` (`tell`: a holder id the caller chose): the record; the
    /// lock deleted if it is `id`'s. Returns the lock it removed.
    pub fn complete(&self, s: &mut State, id: HolderId, tell: bool) -> Option<Lock> {
        if s.ghost.done_at.is_none() {
            s.ghost.done_at = Some(s.redis.counter);
        }
        let r = &mut s.redis;
        // complete.lua 17-19: held = GET lock == holder; waited = EXISTS marker.
        let held = r.lock.filter(|l| l.holder == id);
        let waited = r.marker.is_some();
        if held.is_some() {
            // 20-22: DEL lock marker (today's script); the earlier designs delete the lock
            // (the marker is not modelled there, or hole 4 takes it below).
            r.lock = None;
            if self.design.publish_when_waited_or_told {
                r.marker = None;
            }
        }
        // 23: SET record.
        r.done = true;
        if self.design.publish_when_waited_or_told {
            // 24-26: publish when someone waited, the lock was someone else's, or asked.
            if waited || held.is_none() || tell {
                self.publish_released(s);
            }
        } else if self.design.release_publishes_only_when_waited {
            // Before issue 20: `if DEL marker == 1 then PUBLISH` (whoever holds the lock).
            if r.marker.take().is_some() {
                self.publish_released(s);
            }
        } else if held.is_some() {
            // The earlier HANDOVER: a completion that deletes the lock publishes.
            self.publish_released(s);
        }
        held
    }

    /// cleanup: DEL lock; PUBLISH released (`cleanup.lua`); then marker, queue and waiters:
    /// at once (the earlier HANDOVER), or by later commands (`scan.rs`, `delete_locks`:
    /// `Req::Cleanup` in flight, `Design::cleanup_locks_first`). Returns the lock removed.
    pub fn cleanup(&self, s: &mut State) -> Option<Lock> {
        let lock = s.redis.lock.take();
        if self.design.cleanup_locks_first {
            s.send(crate::state::Req::Cleanup);
        } else {
            self.cleanup_rest(s);
        }
        if lock.is_some() {
            self.publish_released(s);
        }
        lock
    }

    /// The rest of a cleanup: `DEL` of every marker, queue and waiters' hash (three
    /// commands in `delete_locks`, one step here: between them only the marker is gone,
    /// which no script tells from "gone with the queue" but `complete.lua`, whose message
    /// it only spares).
    pub fn cleanup_rest(&self, s: &mut State) {
        let r = &mut s.redis;
        r.marker = None;
        r.queue.clear();
        r.queue_ttl = None;
        r.waiters.clear();
        r.last_grant = None;
        r.waiters_ttl = None;
    }

    /// `PUBLISH bid_lock_released lockkey`: every manager subscribes.
    fn publish_released(&self, s: &mut State) {
        self.publish(s, None);
    }

    /// `PUBLISH bid_lock_released`, naming the new holder of a handover or not. (Only
    /// the new holder's own manager can tell a named notice from a plain one: the others
    /// get it plain, which is the same to them and keeps the states fewer.)
    fn publish(&self, s: &mut State, handed_to: Option<HolderId>) {
        let to = handed_to.and_then(|h| self.client_of(h));
        for m in 0..self.bounds.managers() {
            let mine = to.is_some_and(|c| self.bounds.clients[c].manager == m);
            let handed_to = if mine { handed_to } else { None };
            s.publish(m, Msg::Released { handed_to });
        }
    }
}
