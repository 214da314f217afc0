//! Who may talk to the socket: besides the socket file's mode, `socket.allowed_uids` /
//! `socket.allowed_gids` are checked against the peer's credentials (SO_PEERCRED).

use crate::config::SocketConfig;
use crate::error::ApiError;

/// The credentials of the process on the other end, as the kernel reports them at connect time.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// The peer of the connection a request came on (a request extension), for a handler whose
/// answer outlives a reload: the event stream checks it again before each event.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionPeer(pub Option<Peer>);

/// `None` when the peer may talk; else the 403 every request of the connection gets.
///
/// With neither list set, the socket's file mode is the only gate. With one or both set, the
/// peer must be in one of them (its uid in `allowed_uids`, or its primary gid in
/// `allowed_gids`); supplementary groups are not visible through SO_PEERCRED.
pub fn check(cfg: &SocketConfig, peer: Option<Peer>) -> Option<ApiError> {
    if cfg.allowed_uids.is_none() && cfg.allowed_gids.is_none() {
        return None;
    }
    let Some(p) = peer else {
        return Some(ApiError::new(
            403,
            "peer_not_allowed",
            "the peer's credentials could not be read, and socket.allowed_uids / allowed_gids are set",
        ));
    };
    let uid_ok = cfg
        .allowed_uids
        .as_ref()
        .is_some_and(|u| u.contains(&p.uid));
    let gid_ok = cfg
        .allowed_gids
        .as_ref()
        .is_some_and(|g| g.contains(&p.gid));
    if uid_ok || gid_ok {
        return None;
    }
    // 65534 is the overflow id: how the kernel shows a peer whose ids the daemon's user
    // namespace does not map (systemd's `PrivateUsers=yes`). Allowing it would allow them all.
    let advice = if p.uid == OVERFLOW_ID || p.gid == OVERFLOW_ID {
        "ask the operator to add it to socket.allowed_uids or socket.allowed_gids; but 65534 \
         (`nobody`) is also how every peer outside the daemon's user namespace appears (e.g. \
         under systemd's PrivateUsers=yes), and there those keys cannot tell peers apart: run \
         the daemon without PrivateUsers, or leave the keys out and control access with \
         socket.mode and the socket's group"
    } else {
        "ask the operator to add it to socket.allowed_uids or socket.allowed_gids"
    };
    Some(ApiError::new(
        403,
        "peer_not_allowed",
        format!(
            "uid {} / gid {} may not use this socket: {advice}",
            p.uid, p.gid
        ),
    ))
}

/// The kernel's default `overflowuid` / `overflowgid`.
const OVERFLOW_ID: u32 = 65534;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cfg(uids: Option<Vec<u32>>, gids: Option<Vec<u32>>) -> SocketConfig {
        SocketConfig {
            path: PathBuf::from("/tmp/x.sock"),
            mode: 0o660,
            allowed_uids: uids,
            allowed_gids: gids,
            max_connections: 1,
            max_request_bytes: 1,
            max_batch_bytes: 1,
            max_body_memory_bytes: 1,
        }
    }

    #[test]
    fn lists_gate_by_uid_or_gid() {
        let p = Some(Peer {
            uid: 1000,
            gid: 100,
            pid: None,
        });
        assert!(check(&cfg(None, None), p).is_none());
        assert!(check(&cfg(None, None), None).is_none());
        assert!(check(&cfg(Some(vec![1000]), None), p).is_none());
        assert!(check(&cfg(None, Some(vec![100])), p).is_none());
        assert!(check(&cfg(Some(vec![1]), Some(vec![100])), p).is_none());
        let e = check(&cfg(Some(vec![1]), Some(vec![2])), p).unwrap();
        assert_eq!((e.status, e.code.as_str()), (403, "peer_not_allowed"));
        assert!(check(&cfg(Some(vec![1000]), None), None).is_some());
    }

    #[test]
    fn an_unmapped_peer_is_explained() {
        let nobody = Some(Peer {
            uid: OVERFLOW_ID,
            gid: OVERFLOW_ID,
            pid: None,
        });
        let e = check(&cfg(Some(vec![1000]), None), nobody).unwrap();
        assert!(e.message.contains("PrivateUsers"), "{}", e.message);
        let p = Some(Peer {
            uid: 1001,
            gid: 100,
            pid: None,
        });
        let e = check(&cfg(Some(vec![1000]), None), p).unwrap();
        assert!(!e.message.contains("PrivateUsers"), "{}", e.message);
    }
}
