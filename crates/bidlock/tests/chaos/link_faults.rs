//! Faults on one library instance's own links (a proxy per instance): a slow link, so
//! that its manager's tries pile up in flight and ride in batches; and grants held back,
//! its subscriber link stalled towards the client (grant and release messages wait)
//! while its commands flow, possibly late. Each proves it took effect: the proxy held
//! chunks back (a subscriber stall holding a message, not just silence).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bidlock_testkit::{Direction, Fault as ProxyFault, FaultProxy, Role, Traffic};

use super::history::{Fault, Harm};
use super::topology::{ping, Topology};

/// After a fault heals, the proxy's pumps pass on what they held: count it too.
const SETTLE: Duration = Duration::from_millis(100);

fn link(topo: &Topology, inst: u8) -> Option<&FaultProxy> {
    topo.links.get(usize::from(inst))
}

fn fault(what: &str, start: Instant, inst: u8) -> Fault {
    let mut f = Fault::new(what, Harm::Benign, start);
    f.link = Some(inst);
    f
}

fn held(before: Traffic, after: Traffic, role: Role, dir: Direction) -> u64 {
    after.held(role, dir) - before.held(role, dir)
}

fn moved(before: Traffic, after: Traffic, role: Role, dir: Direction) -> u64 {
    after.chunks(role, dir) - before.chunks(role, dir)
}

/// Every connection of instance `inst` gets `delay` each way for `d`.
pub async fn slow_link(topo: &Arc<Topology>, inst: u8, delay: Duration, d: Duration) -> Fault {
    let start = Instant::now();
    let Some(p) = link(topo, inst) else {
        return fault("slow link (no proxy)", start, inst);
    };
    let before = p.traffic();
    p.set(ProxyFault::Delay(delay));
    let port = p.port();
    let took = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        ping(port, Duration::from_secs(3)).then(|| t.elapsed())
    })
    .await
    .ok()
    .flatten();
    tokio::time::sleep(d.saturating_sub(start.elapsed())).await;
    p.set(ProxyFault::None);
    tokio::time::sleep(SETTLE).await;
    let after = p.traffic();
    let mut f = fault(&format!("slow link of lib{inst}"), start, inst);
    let cmds = held(before, after, Role::Commands, Direction::ToServer);
    f.effective = took.is_some_and(|t| t >= delay * 2) && cmds > 0;
    f.detail = format!(
        "{delay:?} each way for {d:?}; a PING took {took:?}; {cmds} command chunks delayed"
    );
    f
}

/// Instance `inst`'s subscriber link stalls towards the client for `stall` (grants and
/// release messages wait in it), while its commands reach Redis `cmd_delay` late.
pub async fn hold_grants(
    topo: &Arc<Topology>,
    inst: u8,
    stall: Duration,
    cmd_delay: Duration,
) -> Fault {
    let start = Instant::now();
    let Some(p) = link(topo, inst) else {
        return fault("grants held back (no proxy)", start, inst);
    };
    let before = p.traffic();
    p.set_for(
        Role::Subscribers,
        Some(Direction::ToClient),
        ProxyFault::Blackhole,
    );
    if !cmd_delay.is_zero() {
        p.set_for(
            Role::Commands,
            Some(Direction::ToServer),
            ProxyFault::Delay(cmd_delay),
        );
    }
    tokio::time::sleep(stall).await;
    p.set(ProxyFault::None);
    tokio::time::sleep(SETTLE).await;
    let after = p.traffic();
    let mut f = fault(&format!("grants of lib{inst} held back"), start, inst);
    let messages = held(before, after, Role::Subscribers, Direction::ToClient);
    let replies = moved(before, after, Role::Commands, Direction::ToClient);
    f.effective = messages > 0;
    f.detail = format!(
        "subscriber stalled {stall:?}, commands {cmd_delay:?} late; {messages} message chunks held back, {replies} reply chunks went through"
    );
    f
}
