//! The client commands' standard output. A reader that stops early (`waq ls | head -1`) ends
//! the command quietly with exit 0, as Unix tools end; `println!` would panic instead.
//!
//! SIGPIPE stays ignored (Rust's default) rather than reset to kill the process: the same
//! process writes to the daemon's socket, and a daemon that goes away mid-request must be
//! reported (exit 3), not end the command silently.

use std::io::{self, Write};

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
            eprintln!("waq: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}
