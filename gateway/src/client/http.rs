//! Requests to a Depot server: JSON in, the server's JSON out, and every answer that is not a
//! success turned into a [`Failure`] with the problem's `detail`.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;
use serde_json::Value;

use super::failure::{Exit, Failure};
use super::session::Session;

/// What a path segment may hold unescaped: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Long polls wait up to 20 s on the server; a request gets that and some more.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A path segment, escaped: names come from the command line and must not turn into paths.
pub fn seg(name: &str) -> String {
    match name {
        // Unreserved, yet a URL resolves them: `.` and `..` would climb out of the resource.
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => utf8_percent_encode(name, SEGMENT).to_string(),
    }
}

/// The HTTP client every command uses.
pub fn client() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .user_agent(concat!("depot-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| Failure::other(format!("building the HTTP client: {e}")))
}

/// A server and the credentials to call it.
pub struct Api {
    http: reqwest::Client,
    base: url::Url,
    session: Session,
}

impl Api {
    pub fn new(base: url::Url, session: Session) -> Result<Api, Failure> {
        Ok(Api { http: client()?, base, session })
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// The bearer token requests use now; `refresh` trades the refresh token first.
    pub async fn token(&mut self, refresh: bool) -> Result<String, Failure> {
        self.session.access_token(&self.http, &self.base, refresh).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Value, Failure> {
        self.call(Method::GET, path, None).await
    }

    pub async fn put(&mut self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn post(&mut self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&mut self, path: &str) -> Result<Value, Failure> {
        self.call(Method::DELETE, path, None).await
    }

    /// Every page of a list: follows `next_cursor` and concatenates the arrays under `field`.
    pub async fn get_all(&mut self, path: &str, field: &str) -> Result<Value, Failure> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let sep = if path.contains('?') { '&' } else { '?' };
        loop {
            let page_path = match &cursor {
                Some(c) => format!("{path}{sep}limit=1000&cursor={}", seg(c)),
                None => format!("{path}{sep}limit=1000"),
            };
            let mut page = self.get(&page_path).await?;
            if let Some(list) = page.get_mut(field).and_then(Value::as_array_mut) {
                items.append(list);
            }
            match page.get("next_cursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() && cursor.as_deref() != Some(next) => cursor = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(serde_json::json!({ field: items }))
    }

    /// One request; a 401 with a stored session refreshes the access token and tries once more
    /// (the cached one may have been issued by a server that has since changed its secret).
    pub async fn call(&mut self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let url = self.base.join(path.trim_start_matches('/')).map_err(|e| Failure::other(format!("{path}: {e}")))?;
        let mut retried = false;
        loop {
            let token = self.session.access_token(&self.http, &self.base, retried).await?;
            let mut request = self.http.request(method.clone(), url.clone()).bearer_auth(&token);
            if let Some(body) = body {
                request = request.header("content-type", "application/json").body(body.to_string());
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            let bytes = response.bytes().await?;
            if status == 401 && !retried && self.session.can_refresh() {
                retried = true;
                continue;
            }
            return answer(status, &bytes);
        }
    }
}

/// The JSON of a success (`null` for an empty body such as a 204), or the failure.
pub fn answer(status: u16, bytes: &[u8]) -> Result<Value, Failure> {
    if !(200..300).contains(&status) {
        return Err(Failure::from_answer(status, bytes));
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Failure::new(Exit::Other, format!("the server answered HTTP {status} with a body that is not JSON: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_their_path_segment() {
        assert_eq!(seg("orders.v1_a-b"), "orders.v1_a-b");
        assert_eq!(seg("../admin"), "..%2Fadmin");
        assert_eq!(seg("a b?c#d"), "a%20b%3Fc%23d");
        assert_eq!((seg(".."), seg(".")), ("%2E%2E".to_owned(), "%2E".to_owned()));
    }
}
