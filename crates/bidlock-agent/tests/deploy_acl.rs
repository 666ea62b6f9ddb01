//! The deployment files load the least-privilege ACL of `deploy/redis/bidlock.acl`, run
//! here for real (no Docker or Kubernetes needed): compose's `start-redis.sh` starts a
//! redis-server whose `default` user may only PING and whose `bidlock` user the agent
//! logs in as (REDIS_USERNAME / REDIS_PASSWORD, as in the compose file); the Kubernetes
//! Job's `load-acl.sh` loads the user into a running Redis as an admin. Only hashes of
//! the passwords reach Redis' files.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bidlock_testkit::{free_port, RedisServer, ServerOptions};
use support::{command, PATIENCE};

const BIDLOCK_PW: &str = "deploy-bidlock-pw";
const ADMIN_PW: &str = "deploy-admin-pw";

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `redis-cli -p port [--user u] args...` (password by REDISCLI_AUTH): its stdout.
fn cli(port: u16, user: Option<(&str, &str)>, args: &[&str]) -> String {
    let mut c = Command::new("redis-cli");
    c.args(["--no-auth-warning", "-p", &port.to_string()]);
    if let Some((u, pw)) = user {
        c.args(["--user", u]).env("REDISCLI_AUTH", pw);
    }
    let out = c.args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The agent for two seconds, configured as the compose file configures it.
fn agent_as_in_compose(port: u16) {
    let out = command(None)
        .env("USE_REDIS_LOCKS", "true")
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", port.to_string())
        .env("REDIS_DB", "0")
        .env("REDIS_USERNAME", "bidlock")
        .env("REDIS_PASSWORD", BIDLOCK_PW)
        .args(["--seconds", "2", "--rate", "50", "--json"])
        .output()
        .expect("run the agent");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a summary")).expect("JSON");
    assert!(
        summary["marketplace"]["accepted"].as_u64() > Some(0),
        "{summary}"
    );
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_files_name_the_same_users_secrets_and_scripts() {
    let compose = read("compose.yaml");
    for needed in [
        "/etc/bidlock/redis/start-redis.sh",
        "./redis:/etc/bidlock/redis:ro",
        "REDIS_USERNAME: bidlock",
        "REDIS_PASSWORD: ${BIDLOCK_REDIS_PASSWORD:?",
        "environment: BIDLOCK_REDIS_PASSWORD",
    ] {
        assert!(compose.contains(needed), "compose.yaml lacks {needed}");
    }
    assert!(read("k8s/configmap.yaml").contains("REDIS_USERNAME: \"bidlock\""));
    // The docs quote the file's line as it is.
    let acl = read("redis/bidlock.acl");
    let line = acl
        .lines()
        .find(|l| l.starts_with("user bidlock "))
        .expect("the user line");
    let docs = std::fs::read_to_string(deploy("../docs/OPERATING-REDIS.md")).expect("docs");
    assert!(
        docs.contains(line),
        "docs/OPERATING-REDIS.md does not quote {line}"
    );
    let deployment = read("k8s/deployment.yaml");
    assert!(deployment.contains("name: redis-auth") && deployment.contains("key: password"));
    let job = read("k8s/redis-acl-job.yaml");
    for needed in [
        "--from-file=deploy/redis/bidlock.acl --from-file=deploy/redis/load-acl.sh",
        "/etc/bidlock/redis/load-acl.sh",
        "value: /etc/bidlock/redis/bidlock.acl",
        "name: redis-auth",
        "name: bidlock-config",
    ] {
        assert!(job.contains(needed), "redis-acl-job.yaml lacks {needed}");
    }
}

#[test]
fn compose_starts_redis_with_the_acl_and_the_agent_logs_in_as_bidlock() {
    let dir = tempfile::tempdir().unwrap();
    let (bidlock_pw, admin_pw) = (dir.path().join("bidlock_pw"), dir.path().join("admin_pw"));
    // Secrets as files, with the trailing newline `echo` leaves.
    std::fs::write(&bidlock_pw, format!("{BIDLOCK_PW}\n")).unwrap();
    std::fs::write(&admin_pw, format!("{ADMIN_PW}\n")).unwrap();
    let users = dir.path().join("users.acl");
    let port = free_port();
    let child = Command::new("sh")
        .arg(deploy("redis/start-redis.sh"))
        .args([
            "redis-server",
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--save", "", "--dir"])
        .arg(dir.path())
        .env("BIDLOCK_ACL", deploy("redis/bidlock.acl"))
        .env("BIDLOCK_REDIS_PASSWORD_FILE", &bidlock_pw)
        .env("REDIS_ADMIN_PASSWORD_FILE", &admin_pw)
        .env("BIDLOCK_ACL_OUT", &users)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start-redis.sh");
    let _server = Killed(child);
    let deadline = Instant::now() + PATIENCE;
    while cli(port, None, &["PING"]) != "PONG" {
        assert!(Instant::now() < deadline, "Redis never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    // `default` may only PING (the health check of the compose file).
    assert!(cli(port, None, &["GET", "bid_lock:x"]).contains("NOPERM"));
    assert_eq!(
        cli(port, Some(("admin", ADMIN_PW)), &["ACL", "WHOAMI"]),
        "admin"
    );
    assert!(cli(port, Some(("bidlock", BIDLOCK_PW)), &["GET", "app:x"]).contains("NOPERM"));
    let written = std::fs::read_to_string(&users).unwrap();
    assert!(
        !written.contains(BIDLOCK_PW) && !written.contains(ADMIN_PW),
        "{written}"
    );
    agent_as_in_compose(port);
}

#[test]
fn the_kubernetes_job_script_loads_the_user_into_a_running_redis() {
    let server = RedisServer::start_with(ServerOptions {
        acl_user: Some(("admin".into(), ADMIN_PW.into())),
        ..ServerOptions::default()
    });
    let run = |pw: &str| {
        Command::new("sh")
            .arg(deploy("redis/load-acl.sh"))
            .env("REDIS_PORT", server.port().to_string())
            .env("REDIS_ADMIN_USER", "admin")
            .env("REDIS_ADMIN_PASSWORD", pw)
            .env("BIDLOCK_REDIS_PASSWORD", BIDLOCK_PW)
            .output()
            .expect("load-acl.sh")
    };
    let refused = run("not-the-admin-pw");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ACL SETUSER"));
    let loaded = run(ADMIN_PW);
    let said = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        loaded.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert!(said.contains("user bidlock loaded"), "{said}");
    // Redis keeps only the hash.
    let user = cli(server.port(), Some(("admin", ADMIN_PW)), &["ACL", "LIST"]);
    assert!(
        user.contains("user bidlock on") && !user.contains(BIDLOCK_PW),
        "{user}"
    );
    agent_as_in_compose(server.port());
}
