//! The one tokio runtime of the process (pyo3-async-runtimes' global one), set up
//! before its first use: one worker thread, named for `top` and debuggers.
//!
//! Why one: a Python caller's Redis call wakes the runtime (the connection's task sends
//! the request) and the runtime wakes the event loop (the answer); with a worker per
//! core, the connection's task, the call and the I/O driver could sit on different
//! workers, and each hand-over between them is one more wake-up of a sleeping thread,
//! which on an idle virtual machine costs tens of µs. `bench/peers/breakdown.py`, one
//! task, interleaved in one session on 2 cores: a Redis `with_lock` pair took 277-322 µs
//! with two workers and 184-208 µs with one (redis-py's `SET NX PX` + `DEL` 175-201 µs
//! in the same runs); 32 tasks ran at the same rate with either. What the runtime does
//! per call is a few µs of CPU, far below what the interpreter can ask of it.

pub(crate) fn configure() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .worker_threads(1)
        .thread_name("bidlock-runtime");
    pyo3_async_runtimes::tokio::init(builder);
}
