//! The client commands' standard output. A reader that stops early (`waq ls | head -1`) ends
//! the command quietly with exit 0, as Unix tools end; `println!` would panic instead.
//!
//! SIGPIPE stays ignored (Rust's default) rather than reset to kill the process: the same
//! process writes to the daemon's socket, and a daemon that goes away mid-request must be
//! reported (exit 3), not end the command silently.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Writes `args` and a newline to stderr. A closed or full stderr is ignored, where
/// `eprintln!` would panic (exit 101): the exit code then still says how the command went.
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// `eprintln!` for the commands: see [`err_line`].
#[macro_export]
macro_rules! stderr_line {
    ($($arg:tt)*) => {
        $crate::cli::err_line(format_args!($($arg)*))
    };
}

/// Writes `args` and a newline to stdout (see the module's note on a closed stdout).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    settle(written);
}

/// Writes `bytes` to stdout and flushes (for streams and redrawn screens).
pub fn bytes(bytes: &[u8]) {
    let mut out = io::stdout().lock();
    let written = out.write_all(bytes).and_then(|()| out.flush());
    settle(written);
}

/// Ends the process when stdout is gone: quietly (exit 0) if the reader closed the pipe,
/// saying why (exit 1) for any other error, such as a full disk under a redirect.
fn settle(written: io::Result<()>) {
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(super::EXIT_OK),
        Err(e) => {
            crate::stderr_line!("waq: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}

/// Ends the process quietly (exit 0), as [`bytes`] would at its write, when stdout's reader
/// has gone away; found without writing, for a command with nothing to print just now.
pub fn exit_if_reader_gone() {
    let mut out = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // A pipe whose reader closed reports POLLERR, a terminal hung up POLLHUP (both whatever
    // `events` asks); files and /dev/null report neither.
    // SAFETY: one valid pollfd for the length given, and no wait.
    let ready = unsafe { libc::poll(&mut out, 1, 0) };
    if ready > 0 && out.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        std::process::exit(super::EXIT_OK);
    }
}

/// Set once a [`line_or_note`] write fails; the command learns of it through [`gone`].
static GONE: AtomicBool = AtomicBool::new(false);
/// Set with `GONE` when the failure was not a closed pipe (a full disk under a redirect).
static FAILED: AtomicBool = AtomicBool::new(false);
static GONE_NOTICE: Notify = Notify::const_new();

/// For commands that own child processes and a work directory (`demo`, `bench`): a closed
/// stdout is noted instead of ending the process, so that the command stops through its own
/// clean-up path (see [`gone`]). Later lines are dropped.
pub fn line_or_note(args: std::fmt::Arguments<'_>) {
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() != io::ErrorKind::BrokenPipe {
            crate::stderr_line!("waq: cannot write to standard output: {e}");
            FAILED.store(true, Ordering::Relaxed);
        }
        GONE.store(true, Ordering::Relaxed);
        // A stored permit: the one waiter may start waiting after the write failed.
        GONE_NOTICE.notify_one();
    }
}

/// Resolves once a [`line_or_note`] write has failed: the reader is gone.
pub async fn gone() {
    GONE_NOTICE.notified().await;
}

/// The exit code of a command that stopped because its output is gone: 0 for a reader that
/// closed the pipe, 1 for any other write failure (as [`line`] ends).
pub fn gone_code() -> i32 {
    if FAILED.load(Ordering::Relaxed) {
        1
    } else {
        super::EXIT_OK
    }
}
