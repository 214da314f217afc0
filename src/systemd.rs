//! The systemd protocols waq speaks, without a dependency: readiness and status notifications
//! (`NOTIFY_SOCKET`), the watchdog (`WATCHDOG_USEC`), and socket activation (`LISTEN_FDS`).

use std::io;
use std::os::fd::{FromRawFd, RawFd};

use std::time::Duration;

/// The first file descriptor systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: RawFd = 3;

/// Sends `state` (e.g. `READY=1`, `STOPPING=1`, `STATUS=...`, `WATCHDOG=1`) to the service
/// manager. Returns `Ok(false)` when not run by systemd (no `NOTIFY_SOCKET`).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket name (Linux).
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}

/// How often systemd expects `WATCHDOG=1`, if it does (for this process).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The listening Unix socket systemd passed (socket activation), if any. Clears the
/// `LISTEN_*` variables so children don't inherit them.
pub fn take_listener() -> io::Result<Option<std::os::unix::net::UnixListener>> {
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let fds: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if !pid_matches || fds < 1 {
        return Ok(None);
    }
    if fds > 1 {
        tracing::warn!(
            passed = fds,
            "the service manager passed more than one socket; waq serves the first and leaves \
             the others unused (give waq.socket a single ListenStream=)"
        );
    }
    // The protocol gives us descriptor 3; taking ownership of a raw descriptor is the one
    // `unsafe` step socket activation needs.
    // SAFETY: LISTEN_PID names this process, so systemd passed descriptor 3 to us and nothing
    // else in the process owns it (we read it once, then cleared the variables).
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTEN_FDS_START) };
    // getsockname fails for anything but a Unix socket: a wrong unit file gives a clear error.
    listener.local_addr().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "LISTEN_FDS passed a descriptor that is not a Unix socket; use ListenStream=/path/to/socket in waq.socket",
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_without_systemd_is_a_no_op() {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!notify("READY=1").unwrap());
        }
    }
}
