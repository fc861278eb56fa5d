//! A small JSON client of one node's HTTP API, for `quorate shell` and
//! `quorate demo`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Why a request got no HTTP answer at all.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{addr:?} is not a node address: {why}; give HOST:PORT or http://HOST:PORT")]
    BadAddress { addr: String, why: String },
    #[error("cannot reach the node at {base}: {why}; is quorated running there?")]
    Unreachable { base: String, why: String },
    #[error("the node at {base} did not answer within {secs} s")]
    Timeout { base: String, secs: u64 },
}

/// An answer: the HTTP status and the body, as JSON when it is JSON.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.text).ok()
    }
}

#[derive(Clone)]
pub struct NodeClient {
    /// `http://host:port`, without a trailing slash.
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl NodeClient {
    /// `addr` is `HOST:PORT` or `http://HOST:PORT`.
    pub fn new(addr: &str, timeout: Duration) -> Result<NodeClient, HttpError> {
        let bad = |why: &str| HttpError::BadAddress {
            addr: addr.to_string(),
            why: why.to_string(),
        };
        let host_port = match addr.trim().split_once("://") {
            Some(("http", rest)) => rest.trim_end_matches('/'),
            Some((scheme, _)) => return Err(bad(&format!("the scheme {scheme} is not supported"))),
            None => addr.trim().trim_end_matches('/'),
        };
        if host_port.is_empty() || host_port.contains('/') || !host_port.contains(':') {
            return Err(bad("expected HOST:PORT"));
        }
        let base = format!("http://{host_port}");
        base.parse::<Uri>().map_err(|e| bad(&e.to_string()))?;
        Ok(NodeClient {
            base,
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build_http(),
            timeout,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, path: &str) -> Result<Answer, HttpError> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, HttpError> {
        self.send(Method::POST, path, Some(body.to_string())).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Answer, HttpError> {
        let unreachable = |why: String| HttpError::Unreachable {
            base: self.base.clone(),
            why,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status,
                text: String::from_utf8_lossy(&bytes).into_owned(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout {
                base: self.base.clone(),
                secs: self.timeout.as_secs(),
            })?
    }
}

/// hyper's client error says "client error (Connect)"; the cause says what
/// actually happened ("Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let t = Duration::from_secs(1);
        assert_eq!(
            NodeClient::new("127.0.0.1:4001", t).unwrap().base(),
            "http://127.0.0.1:4001"
        );
        assert_eq!(
            NodeClient::new("http://db.example:4001/", t)
                .unwrap()
                .base(),
            "http://db.example:4001"
        );
        for bad in ["", "https://x:1", "x:1/db", "localhost"] {
            let e = NodeClient::new(bad, t).err().expect(bad);
            assert!(e.to_string().contains("HOST:PORT"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_in_plain_words() {
        // Bind then drop: nothing listens on this port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = NodeClient::new(&format!("127.0.0.1:{port}"), Duration::from_secs(5)).unwrap();
        let e = c.get("/status").await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("cannot reach the node"), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }
}
