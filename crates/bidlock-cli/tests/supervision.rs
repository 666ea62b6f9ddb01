//! `run` supervises its command (docs/CLI.md, `run`): signals are forwarded; when the lock
//! is lost (also by an operator's force release) the command's process group is stopped
//! (SIGTERM, then SIGKILL after `--grace`) and `run` exits 77; and the command never
//! outlives `run` unsupervised (issue 21, item 1): when `run` alone is killed (SIGKILL,
//! `timeout -s KILL`), its command, a grandchild in the command's group and one that left
//! the group with `setsid` all end at once, and the next holder starts only after they
//! are gone. What a finished command leaves running is stopped before the lock is
//! released.
//!
//! - `signals_are_forwarded_to_the_command`, `a_hangup_is_passed_on_to_the_command_which_decides`.
//! - `a_lock_lost_while_running_gives_77_and_stops_the_command`,
//!   `a_forced_release_stops_run_within_a_second_or_two` (the notice guarantee of
//!   docs/GUARANTEES.md, seen from `run`), `a_command_ignoring_sigterm_is_killed_after_the_grace_period`.
//! - `sigkill_to_run_alone_ends_its_command_and_everything_the_command_started`,
//!   `timeout_s_kill_ends_the_command_too`, `a_killed_keeper_takes_the_command_group_with_it_and_run_says_so`:
//!   `run` or its keeper dies while the command runs.
//! - `what_a_finished_command_left_running_is_stopped_before_the_lock_is_released`.
//!
//! The keeper tests' commands write heartbeats (wall-clock µs stamps) every 20 ms; the
//! second holder stamps its start. "No overlap" is: no heartbeat of the first holder's
//! processes at or after the second holder's start.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bidlock_testkit::process::{children, state};
use bidlock_testkit::RedisServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::{stderr, wait_for, TestCommand};

/// How long a process may take to be gone after what should end it.
const PATIENCE: Duration = Duration::from_secs(10);

/// A command that starts a grandchild in its group and one in a session of its own, and
/// then beats itself; each writes its pid to `NAME.pid` and beats into `NAME.beats`.
fn beating_command(dir: &Path) -> String {
    let beat = |name: &str| {
        format!(
            "while :; do echo ${{EPOCHREALTIME/./}} >> {d}/{name}.beats; sleep 0.02; done",
            d = dir.display()
        )
    };
    format!(
        "echo $$ > {d}/command.pid; \
         ( {group} ) & echo $! > {d}/grandchild.pid; \
         setsid bash -c 'echo $$ > {d}/session.pid; {session}' & \
         {own}",
        d = dir.display(),
        group = beat("grandchild"),
        session = beat("session"),
        own = beat("command"),
    )
}

const NAMES: [&str; 3] = ["command", "grandchild", "session"];

/// Waits until every process of the beating command has written its pid and beat once.
fn wait_started(dir: &Path) -> Vec<Pid> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let pids: Vec<Option<i32>> = NAMES
            .iter()
            .map(|n| {
                let beats = dir.join(format!("{n}.beats"));
                std::fs::metadata(&beats).ok()?;
                std::fs::read_to_string(dir.join(format!("{n}.pid")))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
            .collect();
        if pids.iter().all(Option::is_some) {
            return pids.into_iter().flatten().map(Pid::from_raw).collect();
        }
        assert!(
            Instant::now() < deadline,
            "the command never started: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: Pid) -> bool {
    u32::try_from(pid.as_raw())
        .ok()
        .and_then(state)
        .is_some_and(|s| s != 'Z')
}

/// Waits until none of `pids` is alive (a zombie counts as gone); panics naming the
/// survivors.
fn assert_all_gone(pids: &[Pid], what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "{what}: still running: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last heartbeat of each of the first holder's processes.
fn last_beats(dir: &Path) -> Vec<(String, u64)> {
    NAMES
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(format!("{n}.beats"))).unwrap();
            let last = text
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .max()
                .unwrap_or(0);
            ((*n).to_owned(), last)
        })
        .collect()
}

/// The first holder: `run --ttl 1` over the beating command.
fn first_holder(s: &RedisServer, dir: &Path, posting: &str, wrapper: &[&str]) -> Child {
    let script = beating_command(dir);
    let url = s.url();
    let mut args: Vec<&str> = wrapper.to_vec();
    args.extend([
        env!("CARGO_BIN_EXE_bidlock"),
        "--redis-url",
        &url,
        "run",
        "upwork",
        posting,
        "--ttl",
        "1",
        "--",
        "bash",
        "-c",
        &script,
    ]);
    let mut cmd = Command::new(args[0]);
    for var in bidlock::ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The second holder, started right after the first was killed: it waits for the lock
/// (the dead holder's ttl) and prints when its command started.
fn second_holder_start(s: &RedisServer, posting: &str) -> u64 {
    let out = TestCommand::on(
        s,
        &[
            "run",
            "upwork",
            posting,
            "--wait",
            "20",
            "--quiet",
            "--",
            "bash",
            "-c",
            "echo ${EPOCHREALTIME/./}",
        ],
    )
    .assert_exit_code(0);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the second holder's start stamp")
}

/// After the first holder died: its processes end, and the second holder starts only
/// after their last heartbeat.
fn check_no_overlap(s: &RedisServer, dir: &Path, posting: &str, pids: &[Pid], what: &str) {
    let second = second_holder_start(s, posting);
    assert_all_gone(pids, what);
    for (name, last) in last_beats(dir) {
        assert!(
            last < second,
            "{what}: the first holder's {name} beat at {last} µs, after the second holder \
             started at {second} µs"
        );
    }
}

#[test]
fn signals_are_forwarded_to_the_command() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("got");
    let script = format!(
        "trap 'echo INT > {}; exit 5' INT; sleep 30 & wait",
        marker.display()
    );
    let mut t = TestCommand::on(&s, &["run", "upwork", "sig", "--", "sh", "-c", &script]);
    t.cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let child = t.cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:sig"]) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "INT");
    let exists: i64 = s.cmd(&["EXISTS", "bid_lock:upwork:sig"]);
    assert_eq!(exists, 0, "released after the command ended");
}

#[test]
fn a_hangup_is_passed_on_to_the_command_which_decides() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (started, got) = (dir.path().join("started"), dir.path().join("got"));
    // A terminal that closes sends SIGHUP to `run`: the command gets it and decides
    // (here: it cleans up and exits 4), rather than being killed with `run`.
    let script = format!(
        "trap 'echo HUP > {g}; exit 4' HUP; touch {s}; sleep 30 & wait",
        g = got.display(),
        s = started.display()
    );
    let mut t = TestCommand::on(&s, &["run", "upwork", "hup", "--", "sh", "-c", &script]);
    t.cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut run = t.cmd.spawn().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !started.exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(Pid::from_raw(run.id() as i32), Signal::SIGHUP).unwrap();
    assert_eq!(run.wait().unwrap().code(), Some(4));
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), "HUP");
    assert_eq!(s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:hup"]), 0);
}

#[test]
fn a_lock_lost_while_running_gives_77_and_stops_the_command() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("term");
    // The background sleep is in the command's process group: it is stopped too, so the
    // pipes close and the test does not wait 30 s.
    let script = format!(
        "trap 'echo TERM > {}; exit 0' TERM; sleep 30 & wait",
        marker.display()
    );
    let mut t = TestCommand::on(
        &s,
        &[
            "run", "upwork", "lost", "--ttl", "0.6", "--grace", "5", "--", "sh", "-c", &script,
        ],
    );
    t.cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let child = t.cmd.spawn().unwrap();
    // Wait until the lock is held, then delete it behind the holder's back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:lost"]) == 0 {
        assert!(Instant::now() < deadline, "lock never taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let _: i64 = s.cmd(&["DEL", "bid_lock:upwork:lost"]);
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lost"));
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "TERM");
}

#[test]
fn a_forced_release_stops_run_within_a_second_or_two() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let script = format!("touch {}; sleep 30 & wait", started.display());
    let mut t = TestCommand::on(
        &s,
        &[
            "run", "upwork", "forced", "--ttl", "300", "--grace", "1", "--", "sh", "-c", &script,
        ],
    );
    t.cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let run = t.cmd.spawn().unwrap();
    wait_for("the command to start", Duration::from_secs(10), || {
        started.exists()
    });
    TestCommand::on(&s, &["release", "upwork", "forced", "--force"]).assert_exit_code(0);
    let released = Instant::now();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    // Renewal is 100 s away: only the release message can explain a quick stop.
    assert!(
        released.elapsed() < Duration::from_secs(3),
        "{:?}",
        released.elapsed()
    );
}

#[test]
fn a_command_ignoring_sigterm_is_killed_after_the_grace_period() {
    let s = RedisServer::start();
    let mut t = TestCommand::on(
        &s,
        &[
            "run",
            "upwork",
            "stubborn",
            "--ttl",
            "0.6",
            "--grace",
            "0.5",
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 30",
        ],
    );
    t.cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let child = t.cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:stubborn"]) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let _: () = s.cmd(&["SET", "bid_lock:upwork:stubborn", "thief", "PX", "60000"]);
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(77));
    assert!(start.elapsed() < Duration::from_secs(10));
    let v: String = s.cmd(&["GET", "bid_lock:upwork:stubborn"]);
    assert_eq!(v, "thief", "the thief's lock is not released by the loser");
}

#[test]
fn sigkill_to_run_alone_ends_its_command_and_everything_the_command_started() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut run = first_holder(&s, dir.path(), "killed", &[]);
    let pids = wait_started(dir.path());
    // `run` alone: not its group, not its children.
    kill(Pid::from_raw(run.id() as i32), Signal::SIGKILL).unwrap();
    run.wait().unwrap();
    check_no_overlap(&s, dir.path(), "killed", &pids, "SIGKILL to run");
}

#[test]
fn timeout_s_kill_ends_the_command_too() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // timeout(1) kills its child and its own process group, which holds `run` (not the
    // command's group, which is the keeper's).
    let mut timeout = first_holder(&s, dir.path(), "timed", &["timeout", "-s", "KILL", "4"]);
    let pids = wait_started(dir.path());
    let status = timeout.wait().unwrap();
    assert!(!status.success(), "timeout ran out: {status:?}");
    check_no_overlap(&s, dir.path(), "timed", &pids, "timeout -s KILL");
}

#[test]
fn what_a_finished_command_left_running_is_stopped_before_the_lock_is_released() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pid_file: PathBuf = dir.path().join("left.pid");
    // The command leaves a child in its group and one in a session of its own, and exits.
    let script = format!(
        "sleep 300 & echo $! > {f}; setsid sleep 300 & echo $! >> {f}; exit 0",
        f = pid_file.display()
    );
    let started = Instant::now();
    TestCommand::on(
        &s,
        &["run", "upwork", "leftovers", "--", "bash", "-c", &script],
    )
    .assert_exit_code(0);
    // Both took SIGTERM: `run` did not wait out its 10 s grace period.
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    let pids: Vec<Pid> = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .map(|l| Pid::from_raw(l.trim().parse().unwrap()))
        .collect();
    assert_eq!(pids.len(), 2);
    assert_all_gone(&pids, "leftovers of a finished command");
    assert_eq!(s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:leftovers"]), 0);
}

#[test]
fn a_killed_keeper_takes_the_command_group_with_it_and_run_says_so() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let script = beating_command(dir.path());
    let mut t = TestCommand::on(
        &s,
        &["run", "upwork", "keeper", "--", "bash", "-c", &script],
    );
    // A file, not a pipe: the process that survives keeps its copy of stderr open.
    let err_path = dir.path().join("run.stderr");
    t.cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut run = t.cmd.spawn().unwrap();
    let pids = wait_started(dir.path());
    let keeper = children(run.id());
    assert_eq!(keeper.len(), 1, "run has one child, the keeper: {keeper:?}");
    kill(Pid::from_raw(keeper[0] as i32), Signal::SIGKILL).unwrap();
    let status = run.wait().unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(status.code(), Some(137), "{err}");
    assert!(err.contains("keeper was killed"), "{err}");
    // The command and its grandchild were in the keeper's group; the one in a session of
    // its own had only the keeper to answer to: outside the promise once the keeper is
    // killed by hand.
    assert_all_gone(&pids[..2], "the keeper's group");
    let _ = kill(pids[2], Signal::SIGKILL);
    assert_eq!(s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:keeper"]), 0);
}
