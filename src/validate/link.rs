//! URLs in messages: media links WhatsApp's servers fetch, and call-to-action URLs users open.

use std::net::{Ipv4Addr, Ipv6Addr};

use reqwest::Url;

use super::code;
use super::json::{quote, Path};
use crate::error::ApiError;

/// URL shorteners: WhatsApp refuses to fetch media through them. Matched on the host and its
/// subdomains.
pub const URL_SHORTENERS: [&str; 40] = [
    "bit.ly",
    "bitly.com",
    "j.mp",
    "tinyurl.com",
    "t.co",
    "goo.gl",
    "ow.ly",
    "is.gd",
    "v.gd",
    "buff.ly",
    "rebrand.ly",
    "rebrandly.com",
    "cutt.ly",
    "shorturl.at",
    "tiny.cc",
    "rb.gy",
    "s.id",
    "t.ly",
    "lnkd.in",
    "bl.ink",
    "short.gy",
    "shorturl.com",
    "tr.im",
    "x.co",
    "su.pr",
    "bit.do",
    "adf.ly",
    "shorte.st",
    "soo.gd",
    "clck.ru",
    "u.to",
    "qr.ae",
    "cli.gs",
    "po.st",
    "mcaf.ee",
    "db.tt",
    "fb.me",
    "wp.me",
    "amzn.to",
    "dub.sh",
];

/// Checks a media `link`: https, parsable, a public host, no URL shortener.
pub(super) fn media_link(raw: &str, path: &Path) -> Result<(), ApiError> {
    let host = https_url(raw, path, "serve the file over https")?;
    if let Some(s) = URL_SHORTENERS
        .iter()
        .find(|s| host == **s || host.strip_suffix(**s).is_some_and(|h| h.ends_with('.')))
    {
        return Err(ApiError::invalid(
            code::SHORTENED_LINK,
            path,
            format!(
                "`{path}` goes through the URL shortener {s}, which WhatsApp does not fetch media \
                 from: give the full URL of the file."
            ),
        ));
    }
    Ok(())
}

/// Checks that `raw` is an absolute https URL with a public host; returns the host in lowercase
/// without a trailing dot. `https_advice` ends the refusal of another scheme.
pub(super) fn https_url(raw: &str, path: &Path, https_advice: &str) -> Result<String, ApiError> {
    let invalid = |why: String| ApiError::invalid(code::INVALID_LINK, path, why);
    // The URL is sent to Meta as written, so what a lenient parser would repair stays broken.
    if let Some(c) = raw.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!(
            "`{path}` contains the character {c:?}; percent-encode it (a space is %20)."
        )));
    }
    if raw.contains('\\') {
        return Err(invalid(format!(
            "`{path}` contains a backslash, which is no part of a URL; write / between the \
             parts of the path, or %5C for a backslash in a name."
        )));
    }
    let scheme_ok = raw
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if !scheme_ok {
        return Err(invalid(format!(
            "`{path}` must be an https:// URL, but it is {}; {https_advice}.",
            quote(raw)
        )));
    }
    let url = Url::parse(raw).map_err(|e| {
        invalid(format!(
            "`{path}` is not a valid URL ({e}); check it for typos."
        ))
    })?;
    // The parser puts the host in its canonical form (IDNA, percent-decoding, user info
    // dropped), but the text goes out as written: the written host must already be that form.
    let written_host = raw[8..].split(['/', '?', '#']).next().unwrap_or_default();
    if written_host.contains('@') {
        return Err(invalid(format!(
            "`{path}` has a user name or password before its host (`user@`); WhatsApp opens \
             links without credentials, so give a URL that needs none."
        )));
    }
    if let Some(c) = written_host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']')))
    {
        let ascii = url.host_str().unwrap_or_default();
        return Err(invalid(if c.is_ascii() {
            format!(
                "`{path}` has the character {c:?} in its host; write the host as it is \
                 ({ascii:?})."
            )
        } else {
            format!(
                "`{path}` has the character {c:?} in its host, which WhatsApp does not take; \
                 write the host in its ASCII form ({ascii:?})."
            )
        }));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(invalid(format!(
            "`{path}` has no host; give a full URL like https://example.com/file.jpg."
        )));
    };
    // The parser prints IP hosts canonically (IPv6 in brackets), so parsing them back is exact.
    let ip_public = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>().ok().map(is_public_v6)
    } else {
        host.parse::<Ipv4Addr>().ok().map(is_public_v4)
    };
    match ip_public {
        Some(true) => return Ok(host.to_string()),
        Some(false) => {
            return Err(invalid(format!(
                "`{path}` points to a private or local address, which WhatsApp's servers cannot \
                 reach; use a public URL."
            )))
        }
        None => {}
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") || !host.contains('.') {
        return Err(invalid(format!(
            "`{path}` points to {}, which WhatsApp's servers cannot reach; use a public URL.",
            quote(&host)
        )));
    }
    Ok(host)
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        // 100.64.0.0/10, carrier-grade NAT
        || (ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        // fc00::/7 unique local, fe80::/10 link-local
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || ip.to_ipv4_mapped().is_some_and(|v4| !is_public_v4(v4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(r: Result<(), ApiError>) -> String {
        r.err().map(|e| e.code).unwrap_or_default()
    }

    #[test]
    fn accepts_public_https() {
        assert!(media_link("https://example.com/a.jpg", &Path::Root("f")).is_ok());
        assert!(media_link("HTTPS://cdn.Example.com./a.jpg?x=1#y", &Path::Root("f")).is_ok());
        assert!(media_link("https://93.184.216.34/a.jpg", &Path::Root("f")).is_ok());
        assert!(media_link("https://[2606:2800:220:1::1]/a.jpg", &Path::Root("f")).is_ok());
        assert!(media_link("https://example.com:8443/a.jpg", &Path::Root("f")).is_ok());
        assert!(media_link("https://xn--bcher-kva.de/a.jpg", &Path::Root("f")).is_ok());
        // An @ or a % after the host is the path's, not credentials.
        assert!(media_link("https://example.com/@me/a%20b.jpg?u=a@b", &Path::Root("f")).is_ok());
        assert_eq!(
            https_url("https://Example.COM/x", &Path::Root("f"), "")
                .ok()
                .as_deref(),
            Some("example.com")
        );
    }

    #[test]
    fn refuses_non_https_and_broken() {
        for bad in [
            "http://example.com/a.jpg",
            "ftp://example.com/a.jpg",
            "https:example.com/a.jpg",
            "example.com/a.jpg",
            "",
            "https://",
            "https://exa mple.com/a.jpg",
            "https://example.com/a b.jpg",
            " https://example.com/a.jpg",
            "https://example.com/a.jpg\n",
            "https://ex%zz ample",
            "https://example.com\\a.jpg",
            "https://user:pw@example.com/a.jpg",
            "https://example.com@evil.com/a.jpg",
            "https://@example.com/a.jpg",
            "https://bücher.de/a.jpg",
            "https://ex%61mple.com/a.jpg",
        ] {
            assert_eq!(
                code_of(media_link(bad, &Path::Root("f"))),
                code::INVALID_LINK,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refusals_of_a_written_host_say_what_to_write() {
        let message = |raw: &str| {
            https_url(raw, &Path::Root("f"), "serve it over https")
                .unwrap_err()
                .message
        };
        assert!(message("https://bücher.de/a.jpg").contains("\"xn--bcher-kva.de\""));
        assert!(message("https://u:p@example.com/").contains("user name or password"));
        assert!(message("https://ex%61mple.com/").contains("'%'"));
        assert!(message("http://example.com/").ends_with("; serve it over https."));
    }

    #[test]
    fn refuses_local_hosts() {
        for bad in [
            "https://localhost/a.jpg",
            "https://app.localhost/a.jpg",
            "https://intranet/a.jpg",
            "https://127.0.0.1/a.jpg",
            "https://10.1.2.3/a.jpg",
            "https://192.168.0.10/a.jpg",
            "https://169.254.1.1/a.jpg",
            "https://100.64.0.1/a.jpg",
            "https://[::1]/a.jpg",
            "https://[fd00::1]/a.jpg",
            "https://[fe80::1]/a.jpg",
            "https://[::ffff:10.0.0.1]/a.jpg",
        ] {
            assert_eq!(
                code_of(media_link(bad, &Path::Root("f"))),
                code::INVALID_LINK,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_shorteners_and_their_subdomains_only() {
        for bad in [
            "https://bit.ly/abc",
            "https://BIT.LY/abc",
            "https://www.bit.ly/abc",
            "https://tinyurl.com/abc",
            "https://t.co/abc",
            "https://s.id/abc",
            "https://lnkd.in/abc",
            "https://bit.ly./abc",
        ] {
            let err = media_link(bad, &Path::Root("message.image.link")).unwrap_err();
            assert_eq!(err.code, code::SHORTENED_LINK, "{bad}");
            assert_eq!(err.field.as_deref(), Some("message.image.link"));
        }
        for ok in [
            "https://notbit.ly/abc",
            "https://microsoft.co/abc",
            "https://mys.id.example.com/abc",
            "https://example.com/bit.ly",
        ] {
            assert!(media_link(ok, &Path::Root("f")).is_ok(), "{ok}");
        }
    }
}
