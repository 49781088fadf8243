//! Webhook signatures made by the senders' own libraries pass `sources::verify`: stripe-python's
//! `WebhookSignature.generate_signature_header` (its helper for signing test payloads) and the
//! Standard Webhooks reference library's `Webhook.sign`, both installed by .ci/run into the venv
//! that `depot_tests::webhooks::python` finds. The same deliveries, late, tampered or checked
//! with another secret, are refused.

use depot_gateway::push::sign::generate_secret;
use depot_gateway::sources::verify::{Refusal, Scheme, Verifier};
use depot_tests::webhooks::sign_as_senders;

const STRIPE_SECRET: &str = "whsec_9f3c1a7e5b2d4c6e8a0b1c2d3e4f5a6b";

struct Signed {
    id: String,
    timestamp: i64,
    body: Vec<u8>,
    stripe: Option<String>,
    standard_webhooks: String,
}

/// Signs each `(id, timestamp, body)` with both libraries, in one python process.
fn sign_with_the_libraries(sw_secret: &str, deliveries: &[(String, i64, Vec<u8>)]) -> Vec<Signed> {
    let signatures = sign_as_senders(STRIPE_SECRET, sw_secret, deliveries).unwrap_or_else(|e| panic!("{e:#}"));
    deliveries
        .iter()
        .zip(signatures)
        .map(|((id, timestamp, body), s)| Signed {
            id: id.clone(),
            timestamp: *timestamp,
            body: body.clone(),
            stripe: s.stripe,
            standard_webhooks: s.standard_webhooks,
        })
        .collect()
}

fn bodies() -> Vec<Vec<u8>> {
    vec![
        br#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}"#.to_vec(),
        Vec::new(),
        "é ünïcode ✓ with a . and \n".as_bytes().to_vec(),
        vec![0xff, 0x00, 0xfe, b'.', b'\n'],
    ]
}

/// Every body signed now, and the first one 10 minutes ago and 10 minutes ahead.
fn deliveries(now_s: i64) -> Vec<(String, i64, Vec<u8>)> {
    let mut all: Vec<(String, i64, Vec<u8>)> =
        bodies().into_iter().enumerate().map(|(i, body)| (format!("msg_{i}"), now_s, body)).collect();
    all.push(("msg_old".to_owned(), now_s - 600, bodies()[0].clone()));
    all.push(("msg_ahead".to_owned(), now_s + 600, bodies()[0].clone()));
    all
}

fn lookup(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
}

fn check_stripe(v: &Verifier, header: &str, body: &[u8], now_ms: i64) -> Result<(), Refusal> {
    v.verify(&lookup(vec![("stripe-signature", header.to_owned())]), body, now_ms)
}

fn check_standard(v: &Verifier, d: &Signed, signature: &str, body: &[u8], now_ms: i64) -> Result<(), Refusal> {
    let headers = lookup(vec![
        ("webhook-id", d.id.clone()),
        ("webhook-timestamp", d.timestamp.to_string()),
        ("webhook-signature", signature.to_owned()),
    ]);
    v.verify(&headers, body, now_ms)
}

#[test]
fn stripe_python_signatures_verify() {
    let now_s = chrono::Utc::now().timestamp();
    let now_ms = now_s * 1000;
    let signed = sign_with_the_libraries(&generate_secret(), &deliveries(now_s));
    let v = Verifier::new(Scheme::Stripe, STRIPE_SECRET, None, None).unwrap();
    let wrong = Verifier::new(Scheme::Stripe, "whsec_another_endpoint_secret", None, None).unwrap();
    let mut checked = 0;
    for d in &signed {
        let Some(header) = &d.stripe else { continue };
        let expected = match d.timestamp - now_s {
            0 => Ok(()),
            -600 => Err(Refusal::Stale { age_ms: 600_000 }),
            _ => Err(Refusal::Future { ahead_ms: 600_000 }),
        };
        assert_eq!(check_stripe(&v, header, &d.body, now_ms), expected, "{} {header}", d.id);
        let mut tampered = d.body.clone();
        tampered.push(b' ');
        assert_eq!(check_stripe(&v, header, &tampered, now_ms), Err(Refusal::BadSignature), "{}", d.id);
        assert_eq!(check_stripe(&wrong, header, &d.body, now_ms), Err(Refusal::BadSignature), "{}", d.id);
        checked += 1;
    }
    assert_eq!(checked, 5, "stripe-python signs every UTF-8 body");

    // While an endpoint secret is rolled, Stripe sends one v1 per secret: the library's
    // signature is accepted behind another one.
    let header = signed[0].stripe.as_deref().unwrap();
    let (t, v1) = header.split_once(",v1=").unwrap();
    let rolled = format!("{t},v1={},v1={v1}", "0".repeat(64));
    assert_eq!(check_stripe(&v, &rolled, &signed[0].body, now_ms), Ok(()));
}

#[test]
fn standard_webhooks_library_signatures_verify() {
    let now_s = chrono::Utc::now().timestamp();
    let now_ms = now_s * 1000;
    let secret = generate_secret();
    let signed = sign_with_the_libraries(&secret, &deliveries(now_s));
    let v = Verifier::new(Scheme::StandardWebhooks, &secret, None, None).unwrap();
    let wrong = Verifier::new(Scheme::StandardWebhooks, &generate_secret(), None, None).unwrap();
    for d in &signed {
        let expected = match d.timestamp - now_s {
            0 => Ok(()),
            -600 => Err(Refusal::Stale { age_ms: 600_000 }),
            _ => Err(Refusal::Future { ahead_ms: 600_000 }),
        };
        let signature = &d.standard_webhooks;
        assert_eq!(check_standard(&v, d, signature, &d.body, now_ms), expected, "{} {signature}", d.id);
        let mut tampered = d.body.clone();
        tampered.push(b' ');
        assert_eq!(check_standard(&v, d, signature, &tampered, now_ms), Err(Refusal::BadSignature), "{}", d.id);
        assert_eq!(check_standard(&wrong, d, signature, &d.body, now_ms), Err(Refusal::BadSignature), "{}", d.id);
    }

    // During a rotation the sender signs with both secrets: any one match is enough.
    let d = &signed[0];
    let both = format!("{} {}", signed[1].standard_webhooks, d.standard_webhooks);
    assert_eq!(check_standard(&v, d, &both, &d.body, now_ms), Ok(()));
}
