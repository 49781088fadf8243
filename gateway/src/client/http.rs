//! Requests to a Depot server: JSON in, the server's JSON out, and every answer that is not a
//! success turned into a [`Failure`] with the problem's `detail`.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;
use serde_json::Value;

use super::config;
use super::failure::{self, Failure};
use super::globals::Globals;
use super::session::{self, Session};

/// What a path segment may hold unescaped: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

const DOT: &str = "%2E";
const DOT_DOT: &str = "%2E%2E";

/// Long polls wait up to 20 s on the server; a request gets that and some more.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A path segment, escaped: names come from the command line and must not turn into paths.
pub fn seg(name: &str) -> String {
    match name {
        // Unreserved, yet a URL resolves them (escaped too): `.` and `..` would climb out of
        // the resource, so they become markers that `Api::call` refuses to send.
        "." => DOT.to_owned(),
        ".." => DOT_DOT.to_owned(),
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

/// The server and credentials a command uses: `DEPOT_TOKEN` (with `DEPOT_URL`, or the context's
/// URL, or [`session::DEFAULT_URL`]), else the context `--context` names, else the current context.
pub fn connect(globals: &Globals) -> Result<Api, Failure> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let path = config::path()?;
    let file = config::load(&path)?;
    if let Some(token) = env("DEPOT_TOKEN") {
        let url = match env("DEPOT_URL") {
            Some(url) => url,
            None => {
                file.context(globals.context.as_deref()).map_or(session::DEFAULT_URL.to_owned(), |(_, c)| c.url.clone())
            }
        };
        return Api::new(session::parse_url(&url)?, Session::Static(token));
    }
    let (name, context) = match (env("DEPOT_URL"), &globals.context) {
        // A refresh token goes only to the server that issued it.
        (Some(url), None) => {
            let url = session::parse_url(&url)?;
            let found = file.contexts.iter().find(|(_, c)| session::parse_url(&c.url).is_ok_and(|u| u == url));
            let (name, context) = found.ok_or_else(|| {
                Failure::auth(format!(
                    "DEPOT_URL is {url} but no context is logged in there: run `depot login {url}` or set DEPOT_TOKEN"
                ))
            })?;
            (name.clone(), context)
        }
        (_, name) => file.context(name.as_deref())?,
    };
    let access = context.access_token.clone().zip(context.access_expires_at);
    let url = session::parse_url(&context.url)?;
    Api::new(url, Session::Stored { path, name, access })
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
        let route = path.split('?').next().unwrap_or_default();
        if route.split('/').any(|s| s == DOT || s == DOT_DOT) {
            return Err(Failure::usage("`.` and `..` are not names"));
        }
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
            return failure::answer(status, &bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_their_path_segment() {
        assert_eq!(seg("orders.v1_a-b"), "orders.v1_a-b");
        assert_eq!(seg("../admin"), "..%2Fadmin");
        assert_eq!(seg("a b?c#d"), "a%20b%3Fc%23d");
        assert_eq!((seg(".."), seg(".")), (DOT_DOT.to_owned(), DOT.to_owned()));
        assert_eq!(seg("a..b"), "a..b");
    }
}
