//! `depot produce` (lines of stdin or a file, in batches) and `depot consume` (fetch, print,
//! ack).
//!
//! Input is read a line at a time and sent a batch at a time, so a stream of any length needs
//! the memory of one batch. Each line is stored byte for byte; its content type says how
//! consumers see it (JSON, text or raw bytes).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use base64::Engine;
use clap::Args;
use serde_json::{json, Value};

use super::failure::Failure;
use super::globals::Globals;
use super::http::{seg, Api};
use super::output;

/// The longest line read; a longer one stops the command (a message that large would be refused).
const MAX_LINE: usize = 16 << 20;
/// Payload bytes per request before a batch is sent early (the server takes 16 MiB of JSON, and
/// base64 makes bytes a third larger).
const MAX_BATCH_BYTES: usize = 8 << 20;
/// The server's longest long poll.
const FOLLOW_WAIT_MS: u64 = 20_000;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    station: String,
    /// Read lines from this file instead of stdin
    #[arg(long, short, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Messages per request (1-1000)
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    batch: u16,
    /// Idempotency keys KEY-1, KEY-2, ... by line number: running the same command again within
    /// the station's dedup window stores nothing twice
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// A message header for every line, NAME=VALUE (repeatable)
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Content type of every line; default: application/json for lines that are JSON,
    /// text/plain for other UTF-8, application/octet-stream for the rest
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    #[command(flatten)]
    pub globals: Globals,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    station: String,
    group: String,
    /// Keep waiting for new messages (until --max or Ctrl-C)
    #[arg(long)]
    follow: bool,
    /// Stop after this many messages
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max: Option<u64>,
    /// Leave the messages unacked: the group delivers them again after its ack wait
    #[arg(long)]
    no_ack: bool,
    /// Messages per fetch (1-1000)
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    #[command(flatten)]
    pub globals: Globals,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// What the server stored of the messages sent so far.
#[derive(Default)]
struct Tally {
    produced: u64,
    duplicates: u64,
    failed: u64,
    first_offset: Option<u64>,
    last_offset: Option<u64>,
}

pub async fn produce(args: ProduceArgs, api: &mut Api) -> Result<(), Failure> {
    let (reader, total): (Box<dyn Read>, Option<u64>) = match &args.file {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
            let size = file.metadata().ok().map(|m| m.len());
            (Box::new(file), size)
        }
        None => (Box::new(std::io::stdin()), None),
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let bar = output::progress(total, if total.is_some() { "read" } else { "messages" }, total.is_some());
    let path = format!("v1/stations/{}/messages/batch", seg(&args.station));
    let headers: BTreeMap<String, String> = args.headers.iter().cloned().collect();
    let mut tally = Tally::default();
    let (mut batch, mut batch_bytes, mut line_no, mut read) = (Vec::new(), 0usize, 0u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        let eof = n == 0;
        if !eof {
            read += n as u64;
            line_no += 1;
            if line.len() > MAX_LINE {
                return Err(Failure::other(format!("line {line_no} is longer than {} MiB", MAX_LINE >> 20)));
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if !line.is_empty() {
                batch_bytes += line.len();
                batch.push(item(&line, line_no, &args, &headers));
            }
        }
        if !batch.is_empty() && (eof || batch.len() >= usize::from(args.batch) || batch_bytes >= MAX_BATCH_BYTES) {
            let sent = std::mem::take(&mut batch);
            let count = sent.len() as u64;
            let answer = api.post(&path, &json!({ "messages": sent })).await?;
            count_results(&answer, &mut tally)?;
            batch_bytes = 0;
            if total.is_some() {
                bar.set_position(read);
            } else {
                bar.inc(count);
            }
        }
        if eof {
            break;
        }
    }
    bar.finish_and_clear();
    let summary = json!({
        "produced": tally.produced, "duplicates": tally.duplicates, "failed": tally.failed,
        "first_offset": tally.first_offset, "last_offset": tally.last_offset,
    });
    if args.globals.json {
        output::json(&summary)?;
    } else {
        let range = match (tally.first_offset, tally.last_offset) {
            (Some(a), Some(b)) => format!(" at offsets {a}-{b}"),
            _ => String::new(),
        };
        eprintln!(
            "depot: produced {} messages{range}, {} duplicates, {} failed",
            tally.produced, tally.duplicates, tally.failed
        );
    }
    if tally.failed > 0 {
        return Err(Failure::other(format!("{} messages were refused", tally.failed)));
    }
    Ok(())
}

/// One batch item: the line's bytes as they are, in base64, with the content type that says
/// how to read them.
fn item(line: &[u8], line_no: u64, args: &ProduceArgs, headers: &BTreeMap<String, String>) -> Value {
    let content_type = match &args.content_type {
        Some(ct) => ct.clone(),
        None => match std::str::from_utf8(line) {
            Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => "application/json".to_owned(),
            Ok(_) => "text/plain; charset=utf-8".to_owned(),
            Err(_) => "application/octet-stream".to_owned(),
        },
    };
    let mut item = json!({
        "payload_base64": base64::engine::general_purpose::STANDARD.encode(line),
        "content_type": content_type,
    });
    if !headers.is_empty() {
        item["headers"] = json!(headers);
    }
    if let Some(key) = &args.key {
        item["idempotency_key"] = json!(format!("{key}-{line_no}"));
    }
    item
}

fn count_results(answer: &Value, tally: &mut Tally) -> Result<(), Failure> {
    let results = answer["results"].as_array().ok_or_else(|| Failure::other(format!("unexpected answer: {answer}")))?;
    for result in results {
        if let Some(offset) = result["offset"].as_u64() {
            if result["duplicate"].as_bool() == Some(true) {
                tally.duplicates += 1;
            } else {
                tally.produced += 1;
            }
            tally.first_offset.get_or_insert(offset);
            tally.last_offset = Some(offset);
        } else {
            tally.failed += 1;
            if tally.failed <= 10 {
                eprintln!("depot: a message was refused: {}", output::cell(&result["error"]["detail"]));
            }
        }
    }
    Ok(())
}

pub async fn consume(args: ConsumeArgs, api: &mut Api) -> Result<(), Failure> {
    let base = format!("v1/stations/{}/consumer-groups/{}", seg(&args.station), seg(&args.group));
    let bar = output::progress(args.max, "messages", false);
    let mut seen = 0u64;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        let left = args.max.map_or(u64::MAX, |max| max - seen);
        if left == 0 {
            break;
        }
        let max_messages = u64::from(args.batch).min(left);
        let wait_ms = if args.follow { FOLLOW_WAIT_MS } else { 0 };
        let (path, body) = (format!("{base}/fetch"), json!({ "max_messages": max_messages, "wait_ms": wait_ms }));
        let fetch = api.post(&path, &body);
        let answer = tokio::select! {
            answer = fetch => answer?,
            _ = &mut interrupt => break,
        };
        let messages = answer["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            if args.follow {
                continue;
            }
            break;
        }
        for message in &messages {
            print_message(message, args.globals.json)?;
        }
        seen += messages.len() as u64;
        bar.inc(messages.len() as u64);
        if !args.no_ack {
            let receipts: Vec<&Value> = messages.iter().map(|m| &m["receipt"]).collect();
            let acked = api.post(&format!("{base}/ack"), &json!({ "receipts": receipts })).await?;
            let refused = acked["results"].as_array().map_or(0, |r| r.iter().filter(|s| *s != "ok").count());
            if refused > 0 {
                eprintln!("depot: {refused} acks came too late (the messages will be delivered again)");
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// A message as one line: the server's JSON with `--json`, else its payload as stored (JSON as
/// JSON text, text as it is, other bytes raw).
fn print_message(message: &Value, as_json: bool) -> Result<(), Failure> {
    if as_json {
        return output::out(&format!("{message}\n"));
    }
    let content_type = message["content_type"].as_str().unwrap_or_default();
    let is_json = content_type.starts_with("application/json") || content_type.contains("+json");
    let mut bytes = match (&message["payload"], message["payload_base64"].as_str()) {
        (Value::String(text), _) if !is_json => text.clone().into_bytes(),
        (Value::Null, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| Failure::other(format!("offset {}: payload_base64: {e}", message["offset"])))?,
        (payload, _) => payload.to_string().into_bytes(),
    };
    bytes.push(b'\n');
    output::out_bytes(&bytes)
}
