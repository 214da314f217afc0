#!/usr/bin/env node
// Enqueue a WhatsApp message through waq, poll its status, and handle an error.
// Built-in `http` only: requests go to waq's Unix socket through `socketPath`.
// Usage: node node_client.js [socket-path] [to] [sender]  (the sender is needed when there are several)
const http = require("http");

const socketPath = process.argv[2] || process.env.WAQ_SOCKET || "/run/waq/waq.sock";
const to = process.argv[3] || "+1 415 555 0101";
const via = process.argv[4] ? { sender: process.argv[4] } : {};
const agent = new http.Agent({ keepAlive: true });

function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { socketPath, method, path, agent, headers: payload ? { "content-type": "application/json" } : {} },
      (res) => {
        let data = "";
        res.on("data", (chunk) => (data += chunk));
        res.on("end", () => {
          // An answer that is not JSON (none should be) is kept as text rather than thrown.
          let parsed = null;
          try {
            parsed = data ? JSON.parse(data) : null;
          } catch {
            parsed = { error: { code: "not_json", message: data } };
          }
          resolve({ status: res.statusCode, body: parsed });
        });
      },
    );
    req.on("error", reject);
    if (payload) req.write(payload);
    req.end();
  });
}

(async () => {
  const enq = await call("POST", "/v1/messages", {
    ...via,
    to,
    message: { type: "template", template: { name: "hello_world", language: { code: "en_US" } } },
  });
  if (enq.status !== 202 && enq.status !== 200) {
    console.error(`enqueue refused (${enq.status}): ${enq.body?.error?.message}`);
    process.exit(1);
  }
  console.log(`enqueued ${enq.body.id} (${enq.body.state})`);
  for (let i = 0; i < 50; i++) {
    const { body: msg } = await call("GET", `/v1/messages/${enq.body.id}`);
    console.log(`  state: ${msg.state}`);
    if (["sent", "delivered", "read", "failed", "expired", "cancelled"].includes(msg.state)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const bad = await call("POST", "/v1/messages", { ...via, to: "12", message: { type: "text", text: { body: "hi" } } });
  const err = bad.body?.error ?? {};
  console.log(`bad recipient: ${bad.status} ${err.code} (field ${err.field}): ${err.message}`);
  agent.destroy();
})().catch((e) => {
  console.error(`waq unreachable: ${e.message}`);
  process.exit(3);
});
