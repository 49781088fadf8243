//! Building blocks of push delivery (webhooks out): [`guard`] keeps deliveries away from
//! loopback, private, link-local and other internal addresses (checked when a URL is set and
//! again on every connect, so DNS rebinding cannot pass); [`sign`] signs deliveries with the
//! Standard Webhooks scheme (`webhook-signature: v1,<base64 HMAC-SHA256>`); [`client`] posts one
//! delivery and reports the attempt (status, latency, error, Retry-After, a short excerpt of the
//! answer) without following redirects or proxies; [`engine`] delivers every active push group
//! from the Raft leader with the replicated fetch and settle commands; [`live`] keeps each
//! group's counters, latency histogram and attempts log on the delivering node.

pub mod client;
pub mod engine;
pub mod guard;
pub mod live;
pub mod sign;
