//! The Redis store's side of the lock contract ([`LockStore`]): each step is one script.

use std::time::Duration;

use async_trait::async_trait;

use super::calls::{send_renewals, tenure_arg};
use super::protocol::Renewal;
use super::scripts::{COMPLETE, EXTEND, HOLDS};
use super::RedisStore;
use crate::backend::memory::ms;
use crate::backend::{
    Attempt, Complete, Completed, Extend, ExtendLock, LockStore, Release, TryAcquire,
};
use crate::error::Error;
use crate::key::LockKey;
use crate::lease::Holder;

#[async_trait]
impl LockStore for RedisStore {
    fn validity(&self, ttl: Duration) -> Duration {
        ttl
    }

    async fn try_acquire(&self, req: &TryAcquire<'_>) -> Result<Attempt, Error> {
        self.take(req).await
    }

    async fn release(&self, req: &Release<'_>) -> Result<bool, Error> {
        self.let_go(req.key, req.holder, req.tell).await
    }

    async fn extend(&self, req: &ExtendLock<'_>) -> Result<bool, Error> {
        let lock = self.keys.lock_key(req.key);
        let n = match req.how {
            Extend::Exact => {
                let mut inv = EXTEND.prepare_invoke();
                inv.key(&lock)
                    .key(self.keys.wait_key(req.key))
                    .key(self.keys.waiters_key(req.key))
                    .arg(req.holder.as_str())
                    .arg(ms(req.ttl).max(1))
                    .arg(tenure_arg(self.tenure_token(req)));
                inv.invoke_async(&mut self.call()).await
            }
            Extend::Renew => self.renew(req).await,
        }
        .map_err(|e| self.err("extend", &lock, e))?;
        if n == -1 {
            return Err(Error::WrongType {
                key: lock,
                found: "holds another kind of Redis value, not a lock".to_owned(),
            });
        }
        if n != 1 {
            return Ok(false);
        }
        // A renewal on a master the sentinels no longer name does not count, but it does
        // not show the lock gone either (the new master may have it, replicated): unknown,
        // so the lease keeps its last confirmed deadline and the keeper retries on the new
        // master until then.
        if !self.confirm_master(&lock).await? {
            return Err(self.moved_away(&lock));
        }
        Ok(true)
    }

    async fn holds(&self, key: &LockKey, holder: &Holder, token: u64) -> Result<bool, Error> {
        let lock = self.keys.lock_key(key);
        if self.grants.is_some() {
            let mut inv = HOLDS.prepare_invoke();
            inv.key(&lock)
                .key(self.keys.waiters_key(key))
                .arg(holder.as_str())
                .arg(token);
            let n: i64 = inv
                .invoke_async(&mut self.call())
                .await
                .map_err(|e| self.err("holds", &lock, e))?;
            return Ok(n == 1);
        }
        let found: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&lock)
            .query_async(&mut self.call())
            .await
            .map_err(|e| self.err("holds", &lock, e))?;
        Ok(found.as_deref() == Some(holder.as_str().as_bytes()))
    }

    async fn complete(&self, req: &Complete<'_>) -> Result<Completed, Error> {
        let lock = self.keys.lock_key(req.key);
        let mut inv = COMPLETE.prepare_invoke();
        inv.key(&lock)
            .key(self.keys.done_key(req.key))
            .key(self.keys.wait_key(req.key))
            .key(self.keys.queue_key(req.key))
            .arg(req.holder.as_str())
            .arg(&req.record)
            .arg(ms(req.retention).max(1))
            .arg(self.keys.release_channel_of(req.key))
            .arg(self.publish)
            .arg(flag(req.may_release))
            .arg(flag(req.tell));
        let n: i64 = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("complete", &lock, e))?;
        Ok(if n == 1 {
            Completed::Released
        } else {
            Completed::NotHeld
        })
    }
}

impl RedisStore {
    /// The token a renewal or extend checks the key's last grant against (`tenure.lua`):
    /// only where releases hand locks over to queued waiters (a holder id of a store
    /// that never does has one tenure, and the lookup would be a command for nothing).
    fn tenure_token(&self, req: &ExtendLock<'_>) -> Option<u64> {
        self.grants.is_some().then_some(req.token)
    }

    /// A renewal (`renew.lua`): on one server, with the others in flight (a keeper
    /// round's), as one script call.
    async fn renew(&self, req: &ExtendLock<'_>) -> redis::RedisResult<i64> {
        let item = Renewal {
            key: req.key.clone(),
            holder: req.holder.clone(),
            ttl_ms: ms(req.ttl).max(1),
            token: self.tenure_token(req),
        };
        match &self.batches {
            Some(b) => b.renewals.call(item).await,
            None => send_renewals(&mut self.call(), &self.keys, std::slice::from_ref(&item))
                .await?
                .pop()
                .ok_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Parse, "renew.lua answered no item"))
                }),
        }
    }
}

fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}
