//! The one tokio runtime of the process (pyo3-async-runtimes' global one), set up
//! before its first use: one worker per core, threads named for `top` and debuggers.

pub(crate) fn configure() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("bidlock-runtime");
    pyo3_async_runtimes::tokio::init(builder);
}
