//! The fault proxy against a real redis-server: a fault on subscriber connections holds
//! back messages while commands flow, and a delay on a link lets requests overlap (it
//! does not add up per request, as `Latency` does).

use std::time::{Duration, Instant};

use bidlock_testkit::{Direction, Fault, FaultProxy, RedisServer, Role};
use futures_util::StreamExt;
use redis::AsyncCommands;

async fn client(p: &FaultProxy) -> redis::Client {
    redis::Client::open(p.url()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_link_holds_messages_back_while_commands_flow() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let c = client(&p).await;
    let mut pubsub = c.get_async_pubsub().await.unwrap();
    pubsub.subscribe("news").await.unwrap();
    let mut cmd = c.get_multiplexed_async_connection().await.unwrap();
    assert_eq!(
        p.connections(),
        (1, 1),
        "one command and one subscriber link"
    );
    p.set_for(
        Role::Subscribers,
        Some(Direction::ToClient),
        Fault::Blackhole,
    );
    let before = p.traffic();
    let n: i64 = cmd.publish("news", "held").await.unwrap();
    assert_eq!(
        n, 1,
        "Redis delivered the message to the subscriber's socket"
    );
    let pong: String = redis::cmd("PING").query_async(&mut cmd).await.unwrap();
    assert_eq!(pong, "PONG", "commands still flow");
    let mut messages = pubsub.on_message();
    let early = tokio::time::timeout(Duration::from_millis(300), messages.next()).await;
    assert!(early.is_err(), "the message was held back");
    p.set(Fault::None);
    let msg = tokio::time::timeout(Duration::from_secs(2), messages.next())
        .await
        .expect("the held message arrives once the link heals")
        .expect("a message");
    assert_eq!(msg.get_payload::<String>().unwrap(), "held");
    let after = p.traffic();
    assert!(
        after.held(Role::Subscribers, Direction::ToClient)
            > before.held(Role::Subscribers, Direction::ToClient)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_link_delays_both_ways_and_keeps_the_order() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let c = client(&p).await;
    let mut conn = c.get_multiplexed_async_connection().await.unwrap();
    let delay = Duration::from_millis(150);
    p.set(Fault::Delay(delay));
    let t = Instant::now();
    let writes: Vec<_> = (0..5)
        .map(|i| {
            let mut conn = conn.clone();
            tokio::spawn(async move {
                let n: i64 = conn.rpush("order", i).await.unwrap();
                n
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
    assert!(
        t.elapsed() >= delay * 2,
        "each way is delayed ({:?})",
        t.elapsed()
    );
    let list: Vec<i64> = conn.lrange("order", 0, -1).await.unwrap();
    let mut sorted = list.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 1, 2, 3, 4], "every write arrived once");
    let held = p.traffic().held(Role::Commands, Direction::ToServer);
    assert!(held >= 1, "the proxy counted what it delayed");
}
