//! Building blocks of push delivery (webhooks out): [`guard`] keeps deliveries away from
//! loopback, private, link-local and other internal addresses (checked when a URL is set and
//! again on every connect, so DNS rebinding cannot pass); [`sign`] signs deliveries with the
//! Standard Webhooks scheme (`webhook-signature: v1,<base64 HMAC-SHA256>`); [`client`] posts one
//! delivery and reports the attempt (status, latency, error, Retry-After, a short excerpt of the
//! answer) without following redirects or proxies.

pub mod client;
pub mod guard;
pub mod sign;
