//! PLACEHOLDER until the real client lands from the validate branch (same interface).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Transient,
    LongWait,
    Permanent,
    PauseSender,
}

pub fn classify(meta_code: i64) -> ErrorClass {
    match meta_code {
        1 | 2 | 4 | 80007 | 130429 | 131000 | 131016 | 131056 | 131057 | 133004 => {
            ErrorClass::Transient
        }
        131048 | 131049 | 132015 | 132069 => ErrorClass::LongWait,
        0
        | 3
        | 10
        | 33
        | 190
        | 200..=299
        | 368
        | 131005
        | 131031
        | 131037
        | 131042
        | 131045
        | 133010 => ErrorClass::PauseSender,
        _ => ErrorClass::Permanent,
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub base_url: String,
    pub version: String,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_idle_per_host: usize,
}

#[derive(Clone)]
pub struct CloudClient {
    http: reqwest::Client,
    opts: ClientOptions,
}

#[derive(Debug, Clone)]
pub enum SendOutcome {
    Accepted { wamid: String },
    Failed(CloudError),
}

#[derive(Debug, Clone)]
pub struct CloudError {
    pub class: ErrorClass,
    pub meta_code: Option<i64>,
    pub http_status: Option<u16>,
    pub message: String,
    pub details: Option<String>,
}

impl CloudError {
    pub fn code_name(&self) -> String {
        match (self.meta_code, self.http_status) {
            (Some(c), _) => format!("meta_{c}"),
            (None, Some(s)) => format!("http_{s}"),
            _ => "connection".into(),
        }
    }
}

impl CloudClient {
    pub fn new(opts: ClientOptions) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(opts.request_timeout)
            .connect_timeout(opts.connect_timeout)
            .pool_max_idle_per_host(opts.max_idle_per_host)
            .build()?;
        Ok(CloudClient { http, opts })
    }

    pub async fn send(
        &self,
        phone_number_id: &str,
        token: &str,
        to: &str,
        message_json: &str,
    ) -> SendOutcome {
        let url = format!(
            "{}/{}/{}/messages",
            self.opts.base_url, self.opts.version, phone_number_id
        );
        let body = format!(
            "{{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\",\"to\":\"{to}\",{}",
            &message_json[1..]
        );
        let fail = |class, meta_code, http_status, message: String| {
            SendOutcome::Failed(CloudError {
                class,
                meta_code,
                http_status,
                message,
                details: None,
            })
        };
        let resp = match self
            .http
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return fail(ErrorClass::Transient, None, None, e.to_string()),
        };
        let status = resp.status().as_u16();
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        if let Some(code) = v["error"]["code"].as_i64() {
            return fail(
                classify(code),
                Some(code),
                Some(status),
                v["error"]["message"].as_str().unwrap_or("").to_string(),
            );
        }
        match v["messages"][0]["id"].as_str() {
            Some(w) if status == 200 => SendOutcome::Accepted {
                wamid: w.to_string(),
            },
            _ => fail(
                ErrorClass::Transient,
                None,
                Some(status),
                format!("HTTP {status}"),
            ),
        }
    }
}
