//! Loopback ports without races. A test that asks the kernel for a free port, closes it and
//! hands the number to a process that binds it later can lose it to another test meanwhile.
//! Instead: a process that listens on port 0 and says in its log where (`logged_addr`,
//! `SimChild`), or a port held by a socket that is bound but not listening (`HeldPort`).
//! Included by `tests/common/mod.rs`, and by `#[path]` where that module is not used.
#![allow(dead_code)] // each test binary uses its own part of this

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// A port on 127.0.0.1 held by a TCP socket that is bound but not listening. Connections to it
/// are refused (a SYN finds no listener: RST), and no one else can bind it while it is held:
/// the socket does not set `SO_REUSEADDR`, so every other bind of the port fails. (A bound
/// `std::net::TcpListener` would accept connections into its backlog instead of refusing them.)
pub struct HeldPort(Socket);

impl HeldPort {
    pub fn new() -> HeldPort {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("a free loopback port");
        HeldPort(socket)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("the held port's address")
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// Starts listening on the same socket: the port goes from refusing to accepting with no
    /// moment free in between. Non-blocking, for `tokio::net::TcpListener::from_std`.
    pub fn listen(self) -> std::net::TcpListener {
        self.0.listen(1024).expect("listening on the held port");
        self.0.set_nonblocking(true).unwrap();
        self.0.into()
    }
}

/// The address a process logged it listens on: in the last line of `log` that contains
/// `message`, the value of `key` (`addr=127.0.0.1:PORT`, or `url=http://127.0.0.1:PORT`).
pub fn logged_addr(log: &str, message: &str, key: &str) -> Option<SocketAddr> {
    let line = log.lines().rev().find(|l| l.contains(message))?;
    let value = line.split_once(key)?.1.split_whitespace().next()?;
    value.trim_start_matches("http://").parse().ok()
}

/// `waq sim` as a child process on a port the kernel picks, with stderr to a file, its port
/// read from its start line. Killed when dropped, however the test ends.
pub struct SimChild {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SimChild {
    /// `waq sim --listen 127.0.0.1:0` with the environment variables `env`.
    pub fn start(env: &[(&str, &str)]) -> SimChild {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sim.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_waq"));
        cmd.args(["sim", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut sim = SimChild {
            child: cmd.spawn().unwrap(),
            port: 0,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = sim.log_text();
            if let Some(addr) = logged_addr(&log, "simulator listening", "url=") {
                sim.port = addr.port();
                return sim;
            }
            if let Some(status) = sim.child.try_wait().unwrap() {
                panic!("the simulator exited ({status}): {log}");
            }
            assert!(
                Instant::now() < deadline,
                "the simulator did not start: {log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the simulator logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SimChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
