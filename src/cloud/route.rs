//! How connections reach the Graph API's host: directly, or through an HTTP proxy by a
//! `CONNECT` tunnel, with TLS to Meta inside it.
//!
//! The proxy comes from the environment as curl reads it: `HTTPS_PROXY` (or `ALL_PROXY`, or
//! their lower-case forms), with `user:password@` for the proxy's basic authentication, and
//! `NO_PROXY` for the hosts to reach directly. Only `https://` endpoints use it: `http://`
//! is for a local simulator, which a proxy meant for the way out should not see.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::bail;
use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Proxy;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connector to the endpoint's host, chosen once for the client.
#[derive(Clone, Debug)]
pub(super) enum Route {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
}

impl Route {
    /// The route to `base_url` as `proxy` says.
    pub(super) fn new(
        base_url: &str,
        proxy: &Proxy,
        connector: HttpConnector,
    ) -> anyhow::Result<Route> {
        let Ok(base) = base_url.parse::<Uri>() else {
            // The endpoint checks refuse such a URL first; requests to it fail on their own.
            return Ok(Route::Direct(connector));
        };
        if base.scheme_str() != Some("https") {
            return Ok(Route::Direct(connector));
        }
        let matcher = match proxy {
            Proxy::FromEnvironment => Matcher::from_env(),
            Proxy::Direct => return Ok(Route::Direct(connector)),
            Proxy::Via(url) => Matcher::builder().all(url.clone()).build(),
        };
        let Some(intercept) = matcher.intercept(&base) else {
            return Ok(Route::Direct(connector));
        };
        let proxy_uri = intercept.uri();
        if proxy_uri.scheme_str() != Some("http") {
            bail!(
                "the proxy for {} ({}://{}, from HTTPS_PROXY or ALL_PROXY) is not an http:// \
                 proxy; waq tunnels through http:// proxies only",
                base.host().unwrap_or("the Graph API"),
                proxy_uri.scheme_str().unwrap_or("?"),
                proxy_uri.authority().map_or("?", |a| a.as_str()),
            );
        }
        let mut tunnel = Tunnel::new(proxy_uri.clone(), connector);
        if let Some(auth) = intercept.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        Ok(Route::Tunnel(tunnel))
    }
}

impl tower::Service<Uri> for Route {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Route::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Route::Tunnel(t) => t.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        match self {
            Route::Direct(c) => {
                let connecting = c.call(destination);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Route::Tunnel(t) => {
                let connecting = t.call(destination);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
        }
    }
}
