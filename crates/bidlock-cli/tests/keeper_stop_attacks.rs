//! Attacks on how `run` tells a command its keeper stopped (77, not recorded) from one
//! that finished on its own (its code decides; `--once` 0 records, 78 after a loss).
//! Written by a fresh-context review of that change: five failed on its first version;
//! two were bugs (a false "keeper was killed" on every stop, a `setsid` grandchild left
//! by a stalled keeper), one a contradiction in `run`'s messages, and two are stated
//! limits now (a keeper frozen or killed leaves `run` unable to know: 77, and it says so).
//!
//! Interleavings are forced by freezing the keeper (SIGSTOP) while the command exits or
//! while `run` acts on the loss, as in
//! `exactly_once.rs::a_command_that_ended_just_before_the_loss_was_acted_on_is_recorded`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use bidlock_testkit::process::state;
use bidlock_testkit::RedisServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::{recorded, wait_for, TestCommand};

const PATIENCE: Duration = Duration::from_secs(10);

fn alive(pid: i32) -> bool {
    u32::try_from(pid)
        .ok()
        .and_then(state)
        .is_some_and(|s| s != 'Z')
}

fn zombie(pid: i32) -> bool {
    u32::try_from(pid).ok().and_then(state) == Some('Z')
}

fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// Whether `pid` is still alive `limit` after `run` ended (killed then, so nothing leaks).
fn left_running(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let was = alive(pid);
    signal(pid, Signal::SIGKILL);
    was
}

/// A command's files: it writes `keeper command` to `pids` once it runs, and waits for
/// `go` before its last step.
struct Script {
    dir: tempfile::TempDir,
}

impl Script {
    fn new() -> Script {
        Script {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `prelude`, then the pids, then a wait for `go`, then `end`.
    fn text(&self, prelude: &str, end: &str) -> String {
        format!(
            "{prelude} echo $PPID $$ > {p}.tmp; mv {p}.tmp {p}; \
             while [ ! -e {go} ]; do sleep 0.01; done; {end}",
            p = self.path("pids").display(),
            go = self.path("go").display(),
        )
    }

    /// `(keeper, command)` once the command runs.
    fn pids(&self) -> (i32, i32) {
        let p = self.path("pids");
        wait_for("the command to start", PATIENCE, || p.exists());
        let text = std::fs::read_to_string(&p).unwrap();
        let mut it = text.split_whitespace().map(|p| p.parse::<i32>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }

    fn go(&self) {
        std::fs::write(self.path("go"), "").unwrap();
    }

    /// A pid the command wrote to `name`.
    fn pid_in(&self, name: &str) -> i32 {
        let p = self.path(name);
        wait_for(name, PATIENCE, || {
            std::fs::read_to_string(&p).is_ok_and(|t| t.trim().parse::<i32>().is_ok())
        });
        std::fs::read_to_string(&p).unwrap().trim().parse().unwrap()
    }
}

/// A `bidlock run` in the background whose stderr is read line by line.
struct Run {
    child: Child,
    lines: Receiver<String>,
    said: Vec<String>,
}

impl Run {
    fn start(s: &RedisServer, posting: &str, flags: &[&str], script: &str) -> Run {
        let mut args = vec!["run", "upwork", posting];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        let mut t = TestCommand::on(s, &args);
        t.cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = t.cmd.spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Run {
            child,
            lines,
            said: Vec::new(),
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Waits until `run` has said a line containing `needle`.
    fn wait_said(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.said.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.said.push(l),
                Err(_) => panic!("run never said {needle:?}: {:#?}", self.said),
            }
        }
    }

    /// `run`'s exit code and all it said.
    fn end(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("run did not end: {:#?}", self.said);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // What is left in the pipe (a leftover process may hold it open: not forever).
        let until = Instant::now() + Duration::from_secs(2);
        while let Ok(l) = self
            .lines
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            self.said.push(l);
        }
        (status.code(), self.said.join("\n"))
    }
}

fn force_release(s: &RedisServer, posting: &str) {
    TestCommand::on(s, &["release", "upwork", posting, "--force"]).assert_exit_code(0);
}

/// The command has exited and its keeper, frozen, has not reaped it; then the lock is
/// force-released and `run` asks the keeper to stop the command.
fn finished_then_lost(s: &RedisServer, sc: &Script, run: &mut Run, posting: &str) -> i32 {
    let (keeper, command) = sc.pids();
    signal(keeper, Signal::SIGSTOP);
    sc.go();
    wait_for("the command to exit", PATIENCE, || zombie(command));
    force_release(s, posting);
    run.wait_said("stopping the command");
    keeper
}

fn no_leftover(p: &Path) -> String {
    format!(
        "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {};",
        p.display()
    )
}

/// The ordinary stop (command running, lock force-released): 77, nothing recorded. The
/// keeper now SIGKILLs itself to say "stopped"; `run` must not tell the operator that the
/// keeper was killed and that it is killing the command's group (CLI.md: run says so only
/// "if the keeper alone is killed").
#[test]
fn an_ordinary_stop_is_not_reported_as_a_killed_keeper() {
    let s = RedisServer::start();
    let sc = Script::new();
    let script = sc.text("trap 'exit 0' TERM;", "exit 0");
    let mut run = Run::start(&s, "plain", &["--once", "--grace", "2"], &script);
    let _ = sc.pids();
    force_release(&s, "plain");
    run.wait_said("stopping the command");
    let (code, said) = run.end();
    assert_eq!(code, Some(77), "{said}");
    assert!(!recorded(&s, "plain"), "77 means not recorded");
    assert!(
        !said.contains("keeper was killed") && !said.contains("killing the command's process"),
        "run told the operator the keeper was killed, though it only stopped the command:\n{said}"
    );
}

/// A command that exits 0 in its SIGTERM trap, after a delay, while its setsid'd
/// grandchild runs: stopped, 77, not recorded, nothing left.
#[test]
fn a_term_trap_that_exits_0_after_a_delay_is_stopped_and_unrecorded() {
    let s = RedisServer::start();
    let sc = Script::new();
    let prelude = format!(
        "{} trap 'sleep 0.7; exit 0' TERM;",
        no_leftover(&sc.path("leftover"))
    );
    let script = sc.text(&prelude, "exit 0");
    let mut run = Run::start(&s, "trap", &["--once", "--grace", "3"], &script);
    let (_, command) = sc.pids();
    let leftover = sc.pid_in("leftover");
    force_release(&s, "trap");
    run.wait_said("stopping the command");
    let (code, said) = run.end();
    assert_eq!(code, Some(77), "{said}");
    assert!(!recorded(&s, "trap"), "77 means not recorded");
    assert!(!alive(command), "the command outlived run");
    assert!(
        !left_running(leftover, Duration::ZERO),
        "the setsid'd grandchild outlived run"
    );
}

/// `--grace 0`: SIGTERM and SIGKILL at once; a command that would exit 0 on SIGTERM is
/// still stopped: 77, not recorded.
#[test]
fn grace_0_stop_of_a_command_that_exits_0_on_term_is_77() {
    let s = RedisServer::start();
    let sc = Script::new();
    let script = sc.text("trap 'exit 0' TERM;", "exit 0");
    let mut run = Run::start(&s, "nograce", &["--once", "--grace", "0"], &script);
    let _ = sc.pids();
    force_release(&s, "nograce");
    run.wait_said("stopping the command");
    let (code, said) = run.end();
    assert_eq!(code, Some(77), "{said}");
    assert!(!recorded(&s, "nograce"), "77 means not recorded");
}

/// A command that ignores SIGTERM, with a grandchild in a session of its own: killed
/// after the grace period, 77, not recorded, nothing left running.
#[test]
fn a_command_ignoring_term_is_killed_with_its_setsid_grandchild() {
    let s = RedisServer::start();
    let sc = Script::new();
    let prelude = format!("{} trap '' TERM;", no_leftover(&sc.path("leftover")));
    let script = sc.text(&prelude, "sleep 300");
    let mut run = Run::start(&s, "stubborn", &["--once", "--grace", "0.5"], &script);
    let (_, command) = sc.pids();
    let leftover = sc.pid_in("leftover");
    force_release(&s, "stubborn");
    run.wait_said("stopping the command");
    let (code, said) = run.end();
    assert_eq!(code, Some(77), "{said}");
    assert!(!recorded(&s, "stubborn"));
    assert!(!alive(command), "the command outlived run");
    assert!(
        !left_running(leftover, Duration::ZERO),
        "the setsid'd grandchild outlived run"
    );
}

/// The command exits 0 after `run` sent the stop but before the keeper (frozen) read it:
/// no SIGTERM ever reached it, it finished on its own: recorded, 78.
#[test]
fn a_command_that_exits_while_the_stop_is_pending_counts_as_finished() {
    let s = RedisServer::start();
    let sc = Script::new();
    let script = sc.text("", "exit 0");
    let mut run = Run::start(&s, "pending", &["--once", "--grace", "5"], &script);
    let (keeper, command) = sc.pids();
    signal(keeper, Signal::SIGSTOP);
    force_release(&s, "pending");
    run.wait_said("stopping the command");
    sc.go();
    wait_for("the command to exit", PATIENCE, || zombie(command));
    signal(keeper, Signal::SIGCONT);
    let (code, said) = run.end();
    assert_eq!(code, Some(78), "{said}");
    assert!(recorded(&s, "pending"), "78 means recorded");
}

/// The checker's history again, with a keeper that answers the stop later than
/// `--grace` + 2 s (a stall: CPU starvation, swap, a cgroup freeze): the command had
/// exited 0 on its own before the loss was seen, but only the keeper could say so. The
/// review found `run` calling it "stopped" without a word about the doubt; the stated
/// limit now (GUARANTEES.md, CLI.md): `run` cannot know, kills what is left, says so, and
/// exits 77, not recorded (a later `--once` runs the posting again, the caller told).
#[test]
fn a_keeper_that_answers_late_leaves_run_unable_to_know_and_it_says_so() {
    let s = RedisServer::start();
    let sc = Script::new();
    let script = sc.text("", "exit 0");
    let mut run = Run::start(&s, "late", &["--once", "--grace", "0"], &script);
    let keeper = finished_then_lost(&s, &sc, &mut run, "late");
    std::thread::sleep(Duration::from_secs(3));
    signal(keeper, Signal::SIGCONT);
    let (code, said) = run.end();
    assert_eq!(code, Some(77), "{said}");
    assert!(!recorded(&s, "late"), "77 means not recorded:\n{said}");
    assert!(
        said.contains("keeper did not answer") && said.contains("not recorded"),
        "run did not say why it cannot know:\n{said}"
    );
    TestCommand::on(&s, &["run", "upwork", "late", "--once", "--", "true"]).assert_exit_code(0);
}

/// Without `--once`: a command that had exited 3 before the loss was seen was not
/// stopped, and `run` says so; its exit is 77 ("lock lost while the command ran", CLI.md),
/// as for any command whose lease went before it finished, and no message calls it
/// stopped afterwards (the review found "was lost before the command finished" right
/// after "had already finished").
#[test]
fn without_once_a_command_that_finished_before_the_loss_is_not_called_stopped() {
    let s = RedisServer::start();
    let sc = Script::new();
    let script = sc.text("", "exit 3");
    let mut run = Run::start(&s, "plain3", &["--grace", "2"], &script);
    let keeper = finished_then_lost(&s, &sc, &mut run, "plain3");
    signal(keeper, Signal::SIGCONT);
    let (code, said) = run.end();
    assert!(
        said.contains("already finished"),
        "run saw the command as finished:\n{said}"
    );
    assert!(
        !said.contains("before the command finished")
            && said.contains("lost while the command ran"),
        "run's messages contradict each other:\n{said}"
    );
    assert_eq!(code, Some(77), "lock lost while the command ran:\n{said}");
}

/// `run` itself gets SIGTERM while it waits for the keeper to stop the command (whose
/// trap exits 0 after a delay): still 77, nothing recorded, the command gone first.
#[test]
fn sigterm_to_run_while_it_stops_the_command_changes_nothing() {
    let s = RedisServer::start();
    let sc = Script::new();
    let script = sc.text("trap 'sleep 1; exit 0' TERM;", "exit 0");
    let mut run = Run::start(&s, "term", &["--once", "--grace", "3"], &script);
    let (_, command) = sc.pids();
    force_release(&s, "term");
    run.wait_said("stopping the command");
    signal(run.pid(), Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    signal(run.pid(), Signal::SIGTERM);
    let (code, said) = run.end();
    assert_eq!(code, Some(77), "{said}");
    assert!(!recorded(&s, "term"), "77 means not recorded");
    assert!(!alive(command), "the command outlived run");
}

/// SIGCHLD and the stop in the same signalfd read window: the keeper frozen while the
/// command exits 0 *and* the stop arrives, both pending when it resumes, under
/// `--grace 0`: finished, 78, recorded; and the next `--once` run does not run it again.
#[test]
fn a_pending_sigchld_behind_a_pending_stop_counts_as_finished_with_grace_0() {
    let s = RedisServer::start();
    let sc = Script::new();
    let script = sc.text("", "exit 0");
    let mut run = Run::start(&s, "both", &["--once", "--grace", "0"], &script);
    let keeper = finished_then_lost(&s, &sc, &mut run, "both");
    signal(keeper, Signal::SIGCONT);
    let (code, said) = run.end();
    assert_eq!(code, Some(78), "{said}");
    assert!(recorded(&s, "both"));
    TestCommand::on(&s, &["run", "upwork", "both", "--once", "--", "true"]).assert_exit_code(76);
}

/// The keeper is stalled when the lock is lost while the command runs: `run` waits
/// `--grace` + 2 s and then SIGKILLs the keeper's process group, 77. The command's
/// grandchild in a session of its own is not in that group: it must not outlive `run`
/// (CLI.md: the command never outlives `run` unsupervised).
#[test]
fn a_stalled_keeper_leaves_no_setsid_grandchild_running_after_77() {
    let s = RedisServer::start();
    let sc = Script::new();
    let prelude = no_leftover(&sc.path("leftover"));
    let script = sc.text(&prelude, "sleep 300");
    let mut run = Run::start(&s, "stall", &["--once", "--grace", "0"], &script);
    let (keeper, command) = sc.pids();
    let leftover = sc.pid_in("leftover");
    signal(keeper, Signal::SIGSTOP);
    force_release(&s, "stall");
    run.wait_said("stopping the command");
    let (code, said) = run.end();
    signal(keeper, Signal::SIGCONT);
    assert_eq!(code, Some(77), "{said}");
    assert!(!recorded(&s, "stall"));
    let cmd_alive = left_running(command, Duration::from_secs(1));
    let leaked = left_running(leftover, Duration::from_secs(1));
    assert!(!cmd_alive, "the command outlived run:\n{said}");
    assert!(
        !leaked,
        "the setsid'd grandchild {leftover} outlived run, unsupervised:\n{said}"
    );
}

/// The keeper is killed by someone else (SIGKILL, OOM-like) after its command had exited
/// 0 on its own and while `run` waits for it to act on the loss. The review found `run`
/// reading any keeper death as "I stopped a running command"; now only the keeper's own
/// report (it dies of the stop signal) means that, and a keeper killed otherwise is the
/// stated limit: `run` says it cannot know and exits 77, not recorded.
#[test]
fn a_keeper_killed_from_outside_after_its_command_finished_is_not_read_as_a_stop() {
    let s = RedisServer::start();
    let sc = Script::new();
    let script = sc.text("", "exit 0");
    let mut run = Run::start(&s, "oom", &["--once", "--grace", "5"], &script);
    let keeper = finished_then_lost(&s, &sc, &mut run, "oom");
    signal(keeper, Signal::SIGKILL);
    let (code, said) = run.end();
    assert_eq!(code, Some(77), "{said}");
    assert!(!recorded(&s, "oom"), "77 means not recorded:\n{said}");
    assert!(
        said.contains("keeper died before it said how the command ended"),
        "run did not say it cannot know:\n{said}"
    );
}

/// The command exits 0 and leaves a child that ignores SIGTERM; the lock is lost while
/// the keeper waits out the grace period for that child: the command had finished, so
/// recorded (78), and the child is gone when `run` ends.
#[test]
fn a_loss_while_the_keeper_cleans_up_after_a_finished_command_is_78() {
    let s = RedisServer::start();
    let sc = Script::new();
    let child = sc.path("child");
    let prelude = format!(
        "sh -c 'trap \"\" TERM; echo $$ > {c}.tmp; mv {c}.tmp {c}; sleep 300' \
         </dev/null >/dev/null 2>&1 &",
        c = child.display()
    );
    let script = sc.text(&prelude, "exit 0");
    let run = Run::start(&s, "cleanup", &["--once", "--grace", "2"], &script);
    let (_, command) = sc.pids();
    let leftover = sc.pid_in("child");
    sc.go();
    wait_for("the command to be reaped", PATIENCE, || {
        !alive(command) && !zombie(command)
    });
    force_release(&s, "cleanup");
    let (code, said) = run.end();
    assert_eq!(code, Some(78), "{said}");
    assert!(recorded(&s, "cleanup"), "78 means recorded");
    assert!(
        !left_running(leftover, Duration::ZERO),
        "the command's child outlived run"
    );
}
