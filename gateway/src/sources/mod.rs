//! Webhook sources (API.md "Sources (webhooks in)"): senders that cannot send an
//! `Authorization` header post to a source's ingest URL and prove themselves with their own
//! signature scheme instead. [`verify`] checks those signatures over the raw body; it knows no
//! HTTP framework, so the ingest route hands it a header lookup and the bytes it received.

pub mod verify;
