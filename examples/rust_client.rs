//! Enqueue a WhatsApp message through waq, poll its status, and handle an error — from Rust,
//! with hyper over waq's Unix socket.
//!
//! Run: `cargo run --example rust_client -- [socket-path] [to] [sender]` (the sender is needed
//! when there are several)

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(path: &str) -> Result<Sender, Box<dyn std::error::Error>> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn call(
    s: &mut Sender,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), Box<dyn std::error::Error>> {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "waq")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))?;
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .or_else(|| std::env::var("WAQ_SOCKET").ok())
        .unwrap_or_else(|| "/run/waq/waq.sock".into());
    let to = args.next().unwrap_or_else(|| "+1 415 555 0103".into());
    let sender = args.next();
    // The request with `sender` when one was named.
    let from_sender = |mut request: Value| {
        if let Some(sender) = &sender {
            request["sender"] = json!(sender);
        }
        request
    };
    let mut s = match connect(&socket).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("waq unreachable at {socket}: {e}");
            std::process::exit(3);
        }
    };

    let (status, answer) = call(
        &mut s,
        "POST",
        "/v1/messages",
        Some(from_sender(json!({
            "to": to,
            "message": {"type": "template",
                        "template": {"name": "hello_world", "language": {"code": "en_US"}}}
        }))),
    )
    .await?;
    if status != 202 && status != 200 {
        eprintln!(
            "enqueue refused ({status}): {}",
            text(&answer["error"]["message"])
        );
        std::process::exit(1);
    }
    let id = answer["id"].as_str().unwrap_or_default().to_string();
    println!("enqueued {id}");
    for _ in 0..50 {
        let (_, msg) = call(&mut s, "GET", &format!("/v1/messages/{id}"), None).await?;
        let state = msg["state"].as_str().unwrap_or("?").to_string();
        println!("  state: {state}");
        if [
            "sent",
            "delivered",
            "read",
            "failed",
            "expired",
            "cancelled",
        ]
        .contains(&state.as_str())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // An error, handled: an unknown priority is refused with the field named.
    let (status, answer) = call(
        &mut s,
        "POST",
        "/v1/messages",
        Some(from_sender(json!({"to": to, "priority": "urgent",
                    "message": {"type": "template", "template": {"name": "hello_world", "language": {"code": "en_US"}}}}))),
    )
    .await?;
    let error = &answer["error"];
    println!(
        "unknown priority: {status} {} (field {}): {}",
        text(&error["code"]),
        text(&error["field"]),
        text(&error["message"])
    );
    Ok(())
}

/// A JSON string as its text (not quoted and escaped, as `Display` of a `Value` writes it).
fn text(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("-")
}
