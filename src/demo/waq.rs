//! The demo's side of the socket API: the same HTTP/1.1 + JSON over the Unix socket that every
//! producer uses (and the CLI's client), with the few calls the story needs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::Method;
use serde_json::Value;

use crate::cli::client::Client;

pub struct Waq {
    client: Client,
}

/// An answer of the daemon: status and JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// `error.code` and `error.message` of an error answer.
    pub fn error(&self) -> (String, String) {
        let e = &self.body["error"];
        (
            e["code"].as_str().unwrap_or("-").to_string(),
            e["message"].as_str().unwrap_or("-").to_string(),
        )
    }
}

/// Counts by state and the sender's figures, from `GET /v1/stats`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub states: BTreeMap<String, u64>,
    pub queue_depth: u64,
    pub in_flight: u64,
    pub sent_last_second: u64,
    pub counters: BTreeMap<String, u64>,
}

impl Stats {
    pub fn state(&self, s: &str) -> u64 {
        self.states.get(s).copied().unwrap_or(0)
    }

    pub fn counter(&self, c: &str) -> u64 {
        self.counters.get(c).copied().unwrap_or(0)
    }

    /// Messages Meta accepted (whatever their receipts say since).
    pub fn accepted(&self) -> u64 {
        self.state("sent") + self.state("delivered") + self.state("read")
    }

    /// Messages known to have reached the phone (`read` implies delivered).
    pub fn delivered(&self) -> u64 {
        self.state("delivered") + self.state("read")
    }

    pub fn total(&self) -> u64 {
        self.states.values().sum()
    }
}

impl Waq {
    pub fn new(socket: &Path) -> Waq {
        Waq {
            client: Client::new(socket),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let reply = self
            .client
            .call(method, path, body.map(|b| b.to_string().into_bytes()))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        Ok(Answer {
            status: reply.status,
            body,
        })
    }

    /// `POST /v1/messages`: any status is an answer (the story shows refusals).
    pub async fn send(&self, request: &Value) -> anyhow::Result<Answer> {
        self.call(Method::POST, "/v1/messages", Some(request)).await
    }

    /// `POST /v1/messages` that must be accepted; returns the id.
    pub async fn enqueue(&self, request: &Value) -> anyhow::Result<String> {
        let a = self.send(request).await?;
        if a.status != 202 {
            let (code, message) = a.error();
            bail!(
                "the daemon refused a send ({}, {code}): {message}",
                a.status
            );
        }
        id_of(&a.body)
    }

    /// `POST /v1/messages/batch` where every item must be accepted; returns the ids.
    pub async fn enqueue_batch(&self, requests: &[Value]) -> anyhow::Result<Vec<String>> {
        let a = self
            .call(
                Method::POST,
                "/v1/messages/batch",
                Some(&Value::from(requests.to_vec())),
            )
            .await?;
        if a.status != 200 {
            let (code, message) = a.error();
            bail!(
                "the daemon refused the batch ({}, {code}): {message}",
                a.status
            );
        }
        let results = a.body["results"]
            .as_array()
            .context("the batch answer has no results")?;
        results.iter().map(id_of).collect()
    }

    pub async fn message(&self, id: &str) -> anyhow::Result<Value> {
        let a = self
            .call(Method::GET, &format!("/v1/messages/{id}"), None)
            .await?;
        if a.status != 200 {
            bail!("GET /v1/messages/{id} answered {}: {}", a.status, a.body);
        }
        Ok(a.body)
    }

    /// Polls until every message of `ids` is in one of `states`; returns them in order.
    pub async fn wait_for(
        &self,
        ids: &[String],
        states: &[&str],
        patience: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + patience;
        loop {
            let mut all = Vec::with_capacity(ids.len());
            for id in ids {
                all.push(self.message(id).await?);
            }
            let pending: Vec<&Value> = all
                .iter()
                .filter(|m| !states.iter().any(|s| m["state"] == *s))
                .collect();
            if pending.is_empty() {
                return Ok(all);
            }
            if Instant::now() > deadline {
                let m = pending[0];
                bail!(
                    "message {} is still `{}` after {} s (waiting for {}); last error: {}",
                    m["id"].as_str().unwrap_or("?"),
                    m["state"].as_str().unwrap_or("?"),
                    patience.as_secs(),
                    states.join(" or "),
                    m["last_error"]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /v1/recipients/{number}`: is the customer's 24-hour window open?
    pub async fn window_open(&self, number: &str) -> anyhow::Result<Option<String>> {
        let digits = super::people::digits(number);
        let a = self
            .call(Method::GET, &format!("/v1/recipients/{digits}"), None)
            .await?;
        if a.status != 200 {
            bail!(
                "GET /v1/recipients/{digits} answered {}: {}",
                a.status,
                a.body
            );
        }
        Ok((a.body["window_open"] == true).then(|| {
            a.body["window_open_until"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        }))
    }

    pub async fn stats(&self) -> anyhow::Result<Stats> {
        let a = self.call(Method::GET, "/v1/stats", None).await?;
        if a.status != 200 {
            bail!("GET /v1/stats answered {}: {}", a.status, a.body);
        }
        let v = &a.body;
        let map = |x: &Value| -> BTreeMap<String, u64> {
            x.as_object()
                .into_iter()
                .flatten()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        };
        let sender = &v["senders"][0];
        Ok(Stats {
            states: map(&v["messages"]),
            queue_depth: v["queue_depth"].as_u64().unwrap_or(0),
            in_flight: v["in_flight"].as_u64().unwrap_or(0),
            sent_last_second: sender["sent_last_second"].as_u64().unwrap_or(0),
            counters: map(&v["counters"]),
        })
    }

    /// Every message in `state` (following the cursors).
    pub async fn list(&self, state: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/messages?state={state}&limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let a = self.call(Method::GET, &path, None).await?;
            if a.status != 200 {
                bail!("GET {path} answered {}: {}", a.status, a.body);
            }
            out.extend(a.body["messages"].as_array().into_iter().flatten().cloned());
            match a.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(out),
            }
        }
    }
}

fn id_of(v: &Value) -> anyhow::Result<String> {
    match v["id"].as_str() {
        Some(id) => Ok(id.to_string()),
        None => bail!("the daemon did not accept a message: {v}"),
    }
}
