//! The daemon's client takes its proxy from the environment, as curl does: `HTTPS_PROXY` for
//! an `https://` endpoint, and `NO_PROXY` for the hosts to reach directly. A binary of its own:
//! the test changes the process environment, which every client built meanwhile would read.

#[path = "common/tls.rs"]
mod tls;

use tls::*;
use waq::cloud::Proxy;

#[tokio::test]
async fn https_proxy_is_used_and_no_proxy_is_honoured() {
    let (base, _seen) = start_server().await;
    let (proxy, heads) = start_connect_proxy().await;
    for name in [
        "ALL_PROXY",
        "all_proxy",
        "https_proxy",
        "no_proxy",
        "NO_PROXY",
    ] {
        std::env::remove_var(name);
    }
    std::env::set_var("HTTPS_PROXY", format!("http://{proxy}"));

    let through_proxy = client_via(&base, true, Proxy::FromEnvironment);
    assert_eq!(through_proxy.send("1", TOKEN, TO, TEXT).await, accepted());
    assert_eq!(heads.lock().unwrap().len(), 1);

    std::env::set_var("NO_PROXY", "127.0.0.1");
    let direct = client_via(&base, true, Proxy::FromEnvironment);
    assert_eq!(direct.send("1", TOKEN, TO, TEXT).await, accepted());
    // The second client went straight to the server: no new CONNECT.
    assert_eq!(heads.lock().unwrap().len(), 1);

    std::env::remove_var("HTTPS_PROXY");
    std::env::remove_var("NO_PROXY");
}
