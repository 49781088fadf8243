//! Push signatures judged by the Standard Webhooks reference library (Python, installed by
//! .ci/run; see `depot_tests::webhooks`): one secret, two during a rotation, a tampered body,
//! and a delivery as a receiver gets it.

use std::time::Duration;

use bytes::Bytes;
use depot_gateway::push::client::PushClient;
use depot_gateway::push::guard::Guard;
use depot_gateway::push::sign::{generate_secret, parse_secret, signature_header};
use depot_tests::receiver::{Behaviour, Receiver};
use depot_tests::webhooks::verify_standard_webhooks;

type Delivery = (String, String, String, Vec<u8>);

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn signed(id: &str, body: &[u8], keys: &[&[u8]]) -> Delivery {
    let ts = now();
    (id.to_owned(), ts.to_string(), signature_header(id, ts, body, keys), body.to_vec())
}

fn bodies() -> Vec<Vec<u8>> {
    vec![
        br#"{"station":"orders","n":1}"#.to_vec(),
        Vec::new(),
        vec![0xff, 0x00, 0xfe, b'.', b'\n'],
        "é ünïcode ✓".as_bytes().to_vec(),
    ]
}

#[test]
fn one_secret_verifies() {
    let secret = generate_secret();
    let key = parse_secret(&secret).unwrap();
    let deliveries: Vec<Delivery> =
        bodies().iter().enumerate().map(|(i, b)| signed(&format!("msg_{i}"), b, &[&key])).collect();
    verify_standard_webhooks(&secret, &deliveries).unwrap();
}

#[test]
fn during_a_rotation_either_secret_verifies_alone() {
    let new = generate_secret();
    let old = generate_secret();
    let keys = [parse_secret(&new).unwrap(), parse_secret(&old).unwrap()];
    let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let deliveries: Vec<Delivery> =
        bodies().iter().enumerate().map(|(i, b)| signed(&format!("msg_{i}"), b, &key_refs)).collect();
    assert!(deliveries[0].2.contains(' '));
    verify_standard_webhooks(&new, &deliveries).unwrap();
    verify_standard_webhooks(&old, &deliveries).unwrap();
    let stranger = generate_secret();
    let err = verify_standard_webhooks(&stranger, &deliveries).unwrap_err();
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
}

#[test]
fn a_tampered_delivery_fails() {
    let secret = generate_secret();
    let key = parse_secret(&secret).unwrap();
    let good = signed("msg_1", b"{\"n\":1}", &[&key]);
    let mut body = good.clone();
    body.3 = b"{\"n\":2}".to_vec();
    let mut id = good.clone();
    id.0 = "msg_2".to_owned();
    let mut ts = good.clone();
    ts.1 = (now() - 1).to_string();
    for bad in [body, id, ts] {
        let err = verify_standard_webhooks(&secret, &[good.clone(), bad]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("delivery 1"), "{msg}");
        assert!(!msg.contains("delivery 0"), "{msg}");
    }
}

#[tokio::test]
async fn a_delivery_verifies_as_the_receiver_got_it() {
    let rx = Receiver::start(Behaviour::Status(200));
    let secret = generate_secret();
    let key = parse_secret(&secret).unwrap();
    let body = br#"{"hello":"world"}"#;
    let ts = now();
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("webhook-id".to_owned(), "msg_42".to_owned()),
        ("webhook-timestamp".to_owned(), ts.to_string()),
        ("webhook-signature".to_owned(), signature_header("msg_42", ts, body, &[&key])),
    ];
    let client = PushClient::new(Guard::system(true)).unwrap();
    let url = url::Url::parse(&rx.url()).unwrap();
    let a = client.post(&url, &headers, Bytes::from_static(body), Duration::from_secs(10)).await;
    assert_eq!(a.error, None);
    let got = &rx.requests()[0];
    let header = |n: &str| got.header(n).unwrap().to_owned();
    let delivery = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"), got.body.clone());
    verify_standard_webhooks(&secret, &[delivery]).unwrap();
}
