//! The push delivery client against real local receivers (`depot_tests::receiver`): statuses,
//! redirects never followed, Retry-After, timeouts, large answers, refused connections, and the
//! address guard at connect time (stub resolvers that map names to loopback, or that rebind
//! after the URL was checked).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use depot_gateway::push::client::{Attempt, PushClient, EXCERPT_LEN};
use depot_gateway::push::guard::{Guard, ResolveFuture, Resolver};
use depot_tests::receiver::{Behaviour, Receiver};
use url::Url;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Every name resolves to `ip`.
struct Fixed(IpAddr);

impl Resolver for Fixed {
    fn resolve(&self, _host: &str, port: u16) -> ResolveFuture {
        let addr = SocketAddr::new(self.0, port);
        Box::pin(async move { Ok(vec![addr]) })
    }
}

/// A rebinding name: a public address on the first lookup, loopback on every later one.
struct Rebinding(AtomicUsize);

impl Resolver for Rebinding {
    fn resolve(&self, _host: &str, port: u16) -> ResolveFuture {
        let ip: IpAddr =
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 { [93, 184, 216, 34].into() } else { [127, 0, 0, 1].into() };
        Box::pin(async move { Ok::<_, io::Error>(vec![SocketAddr::new(ip, port)]) })
    }
}

fn local_client() -> PushClient {
    PushClient::new(Guard::system(true)).unwrap()
}

async fn post(client: &PushClient, url: &str, timeout: Duration) -> Attempt {
    let url = Url::parse(url).unwrap();
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    client.post(&url, &headers, Bytes::from_static(b"{\"n\":1}"), timeout).await
}

#[tokio::test]
async fn a_2xx_is_a_success_and_the_request_arrives_whole() {
    let rx = Receiver::start(Behaviour::StatusWithBody(204, Vec::new()));
    let client = local_client();
    let url = Url::parse(&rx.url()).unwrap();
    let headers =
        vec![("content-type".to_owned(), "application/json".to_owned()), ("webhook-id".to_owned(), "msg_1".to_owned())];
    let a = client.post(&url, &headers, Bytes::from_static(b"{\"n\":1}"), TIMEOUT).await;
    assert_eq!(a.status, Some(204));
    assert_eq!(a.error, None);
    assert_eq!(a.excerpt, None);
    rx.set(Behaviour::StatusWithBody(200, b"thanks".to_vec()));
    let b = post(&client, &rx.url(), TIMEOUT).await;
    assert_eq!((b.status, b.error, b.excerpt.as_deref()), (Some(200), None, Some("thanks")));
    let seen = rx.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/hook");
    assert_eq!(seen[0].body, b"{\"n\":1}");
    assert_eq!(seen[0].header("webhook-id"), Some("msg_1"));
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(seen[0].status_sent, 204);
    // Keep-alive: both attempts on one pooled connection.
    assert_eq!(rx.connections(), 1);
}

#[tokio::test]
async fn other_statuses_are_failures_named_by_status() {
    let rx = Receiver::start(Behaviour::StatusWithBody(500, b"boom".to_vec()));
    let client = local_client();
    let a = post(&client, &rx.url(), TIMEOUT).await;
    assert_eq!(a.status, Some(500));
    assert_eq!(a.error.as_deref(), Some("HTTP 500"));
    assert_eq!(a.excerpt.as_deref(), Some("boom"));
    rx.set(Behaviour::FailThenOk { failures: 1, status: 410 });
    assert_eq!(post(&client, &rx.url(), TIMEOUT).await.error.as_deref(), Some("HTTP 410"));
    assert_eq!(post(&client, &rx.url(), TIMEOUT).await.error, None);
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let target = Receiver::start(Behaviour::Status(200));
    let rx = Receiver::start(Behaviour::Redirect(target.url()));
    let a = post(&local_client(), &rx.url(), TIMEOUT).await;
    assert_eq!(a.status, Some(302));
    assert_eq!(a.error.as_deref(), Some("redirect (HTTP 302) not followed"));
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(target.connections(), 0);
    assert!(target.requests().is_empty());
}

#[tokio::test]
async fn retry_after_is_read() {
    let rx = Receiver::start(Behaviour::StatusWithHeaders(429, vec![("Retry-After".to_owned(), "2".to_owned())]));
    let a = post(&local_client(), &rx.url(), TIMEOUT).await;
    assert_eq!(a.status, Some(429));
    assert_eq!(a.error.as_deref(), Some("HTTP 429"));
    assert_eq!(a.retry_after, Some(Duration::from_secs(2)));
    rx.set(Behaviour::StatusWithHeaders(
        503,
        vec![("retry-after".to_owned(), "Wed, 21 Oct 2015 07:28:00 GMT".to_owned())],
    ));
    let b = post(&local_client(), &rx.url(), TIMEOUT).await;
    assert_eq!((b.status, b.retry_after), (Some(503), Some(Duration::ZERO)));
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let rx = Receiver::start(Behaviour::Hang);
    let timeout = Duration::from_millis(500);
    let a = post(&local_client(), &rx.url(), timeout).await;
    assert_eq!(a.status, None);
    assert_eq!(a.error.as_deref(), Some("timeout"));
    assert!(a.latency >= timeout, "{:?}", a.latency);
    assert!(a.latency < timeout + Duration::from_secs(2), "{:?}", a.latency);
    assert_eq!(rx.wait_for_async(1, TIMEOUT).await[0].status_sent, 0);
}

#[tokio::test]
async fn a_large_answer_is_cut_to_an_excerpt() {
    let mut body = "é".repeat(EXCERPT_LEN).into_bytes();
    body.resize(1 << 20, b'x');
    let rx = Receiver::start(Behaviour::StatusWithBody(200, body));
    let a = post(&local_client(), &rx.url(), TIMEOUT).await;
    assert_eq!((a.status, a.error), (Some(200), None));
    let excerpt = a.excerpt.unwrap();
    assert!(excerpt.len() <= EXCERPT_LEN, "{}", excerpt.len());
    assert!(excerpt.starts_with("éé"));
    assert!(a.latency < TIMEOUT);
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let a = post(&local_client(), &format!("http://127.0.0.1:{port}/hook"), TIMEOUT).await;
    assert_eq!(a.status, None);
    let error = a.error.unwrap();
    assert!(error.starts_with("connection_error: "), "{error}");
    assert!(error.to_lowercase().contains("refused"), "{error}");
}

#[tokio::test]
async fn blocked_addresses_are_never_connected_to() {
    let rx = Receiver::start(Behaviour::Status(200));
    let port = rx.addr().port();
    // A literal loopback address.
    let strict = PushClient::new(Guard::system(false)).unwrap();
    for url in [rx.url(), format!("http://[::ffff:127.0.0.1]:{port}/hook"), format!("http://2130706433:{port}/hook")] {
        let a = post(&strict, &url, TIMEOUT).await;
        assert_eq!((a.status, a.error.as_deref()), (None, Some("blocked_address")), "{url}");
    }
    // A name that resolves to loopback.
    let loopback: IpAddr = [127, 0, 0, 1].into();
    let guard = Guard::new(false, Arc::new(Fixed(loopback)));
    let name = format!("http://rebind.test:{port}/hook");
    assert!(guard.check_url(&name).await.is_err());
    let a = post(&PushClient::new(guard).unwrap(), &name, TIMEOUT).await;
    assert_eq!((a.status, a.error.as_deref()), (None, Some("blocked_address")));
    assert_eq!(rx.connections(), 0);

    // With private networks allowed, the very same posts arrive.
    let open = PushClient::new(Guard::new(true, Arc::new(Fixed(loopback)))).unwrap();
    assert_eq!(post(&open, &name, TIMEOUT).await.error, None);
    assert_eq!(post(&open, &rx.url(), TIMEOUT).await.error, None);
    assert_eq!(rx.requests().len(), 2);
}

#[tokio::test]
async fn a_name_that_rebinds_after_the_check_is_blocked_at_connect() {
    let rx = Receiver::start(Behaviour::Status(200));
    let url = format!("http://rebind.test:{}/hook", rx.addr().port());
    let guard = Guard::new(false, Arc::new(Rebinding(AtomicUsize::new(0))));
    guard.check_url(&url).await.unwrap();
    let a = post(&PushClient::new(guard).unwrap(), &url, TIMEOUT).await;
    assert_eq!((a.status, a.error.as_deref()), (None, Some("blocked_address")));
    assert_eq!(rx.connections(), 0);

    let open = Guard::new(true, Arc::new(Rebinding(AtomicUsize::new(0))));
    open.check_url(&url).await.unwrap();
    let b = post(&PushClient::new(open).unwrap(), &url, TIMEOUT).await;
    assert_eq!((b.status, b.error), (Some(200), None));
    assert_eq!(rx.connections(), 1);
}

#[tokio::test]
async fn proxy_variables_are_ignored() {
    let rx = Receiver::start(Behaviour::Status(200));
    let proxy = Receiver::start(Behaviour::Status(200));
    let vars = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];
    // Clients read the proxy variables when they are built; they are unset right after.
    for var in vars {
        std::env::set_var(var, format!("http://{}", proxy.addr()));
    }
    let client = local_client();
    let control = reqwest::Client::new();
    for var in vars {
        std::env::remove_var(var);
    }
    let a = post(&client, &rx.url(), TIMEOUT).await;
    assert_eq!((a.status, a.error), (Some(200), None));
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(proxy.connections(), 0);
    // The variables were in effect: a client that honours them goes through the proxy.
    let via_proxy = control.post(rx.url()).send().await.unwrap();
    assert_eq!(via_proxy.status().as_u16(), 200);
    assert_eq!(proxy.connections(), 1);
    assert_eq!(rx.requests().len(), 1);
}
