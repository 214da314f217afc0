//! A bound on a request's head (target plus header lines) that both HTTP servers enforce.
//!
//! hyper refuses heads that outgrow its read buffer, but only when the head arrives in
//! several reads: one large read can fill the buffer past its nominal limit and parse. Checking
//! the parsed head makes the limit exact whatever the timing of the reads.

/// Far above any real client's head (browsers send < 8 KiB; nginx's default limit is 32 KiB).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The head's size as sent, give or take the request line's fixed parts.
pub fn head_bytes<B>(req: &axum::http::Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + target
}

/// True when the head is over [`MAX_HEAD_BYTES`]; the caller answers 431.
pub fn too_large<B>(req: &axum::http::Request<B>) -> bool {
    head_bytes(req) > MAX_HEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_target_and_headers() {
        let req = axum::http::Request::get("/v1/health?x=1")
            .header("host", "waq")
            .body(())
            .unwrap();
        assert_eq!(head_bytes(&req), "/v1/health?x=1".len() + 4 + 3 + 4);
        assert!(!too_large(&req));
    }

    #[test]
    fn a_huge_header_is_too_large() {
        let req = axum::http::Request::get("/v1/health")
            .header("x-big", "x".repeat(MAX_HEAD_BYTES))
            .body(())
            .unwrap();
        assert!(too_large(&req));
    }
}
