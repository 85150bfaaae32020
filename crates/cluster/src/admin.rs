//! The operator's client of `GET /cluster` and `POST /cluster/replace-node`
//! on any node's REST port (for `vectorizer cluster`).

use std::time::Duration;

/// Calls the admin route `path` of the node at `url` with the operator
/// token; a JSON body makes it a POST. The answer's JSON, or why not.
pub async fn call(
    url: &str,
    token: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(330))
        .build()
        .map_err(|e| e.to_string())?;
    let target = format!("{}{path}", url.trim_end_matches('/'));
    let req = match body {
        Some(b) => http.post(&target).json(&b),
        None => http.get(&target),
    };
    let answer = req
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("{target}: {e}"))?;
    let status = answer.status();
    let text = answer.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{target}: {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{target}: {e}"))
}
