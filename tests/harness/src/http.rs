//! The HTTP client tests use, and requests through the gateway.

use crate::util::{DEADLINE, eventually};
use serde_json::Value;
use std::time::Duration;

/// A client that never uses a proxy and gives up after 10 s.
pub fn http() -> reqwest::Client {
    // reqwest is built with rustls but no default crypto provider: pick the one Tessera uses.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Polls `url` until it answers 200.
pub async fn wait_ok(what: &str, url: &str) {
    let client = http();
    eventually(what, DEADLINE, || {
        let req = client.get(url).send();
        async move { req.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
}

/// GETs `url` and parses the JSON body.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// A response through the gateway: status, and the mock's echo when it reached one.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// The body as JSON (null when it is not JSON, e.g. an error Envoy wrote).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The value of a header as the provider received it.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }

    /// The name of the mock provider that answered.
    pub fn provider(&self) -> Option<String> {
        self.json()["provider"].as_str().map(str::to_owned)
    }
}

/// POSTs a chat completion through the gateway with the given headers.
pub async fn send(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client
        .post(url)
        .body(r#"{"messages":[{"role":"user","content":"hi"}]}"#);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status().as_u16(),
        body: resp.text().await.unwrap(),
    }
}
