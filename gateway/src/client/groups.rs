//! `depot group ls|create|get|seek|rm` (pull and push groups).

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::failure::Failure;
use super::globals::Globals;
use super::http::{seg, Api};
use super::output::{self, col};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List a station's consumer groups
    Ls { station: String },
    /// Create a consumer group, or replace its configuration
    Create(CreateArgs),
    /// Show a group: configuration, lag, pending, offsets
    Get { station: String, group: String },
    /// Move a group to an offset or a time: it delivers from there on
    Seek(SeekArgs),
    /// Delete a group
    Rm { station: String, group: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    station: String,
    group: String,
    /// Where a new group starts: earliest, latest, an offset, or an RFC 3339 time
    #[arg(long, value_name = "WHERE")]
    start: Option<String>,
    /// Redeliver a message not acked within this many ms (default 30000)
    #[arg(long, value_name = "MS")]
    ack_wait_ms: Option<u64>,
    /// Dead-letter a message after this many deliveries (default 5)
    #[arg(long, value_name = "N")]
    max_deliveries: Option<u32>,
    /// Redelivery delays after failed attempts, comma-separated ms (e.g. 1000,5000,30000)
    #[arg(long, value_name = "MS,...", value_delimiter = ',')]
    backoff_ms: Vec<u64>,
    /// Most deliveries in flight at once (default 10000)
    #[arg(long, value_name = "N")]
    max_pending: Option<u32>,
    /// Make it a push group delivering each message to this URL (a webhook)
    #[arg(long, value_name = "URL")]
    push_url: Option<String>,
    /// Push: a header sent with each delivery, NAME=VALUE (repeatable)
    #[arg(long, value_name = "NAME=VALUE", requires = "push_url")]
    push_header: Vec<String>,
    /// Push: a delivery's timeout, 1000-60000 ms (default 15000)
    #[arg(long, value_name = "MS", requires = "push_url")]
    push_timeout_ms: Option<u64>,
    /// Push: deliveries in flight at once, 1-1000 (default 16)
    #[arg(long, value_name = "N", requires = "push_url")]
    push_max_in_flight: Option<u32>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["offset", "time"])))]
pub struct SeekArgs {
    station: String,
    group: String,
    /// The next offset to deliver
    #[arg(long)]
    offset: Option<u64>,
    /// The first message produced at or after this RFC 3339 time
    #[arg(long)]
    time: Option<String>,
}

fn group_path(station: &str, group: &str) -> String {
    format!("v1/stations/{}/consumer-groups/{}", seg(station), seg(group))
}

pub async fn run(command: GroupCommand, globals: &Globals, api: &mut Api) -> Result<(), Failure> {
    match command {
        GroupCommand::Ls { station } => {
            let list = api.get(&format!("v1/stations/{}/consumer-groups", seg(&station))).await?;
            let columns = [
                col("NAME", "name"),
                col("LAG", "lag"),
                col("PENDING", "pending"),
                col("DELIVERED", "delivered_offset"),
                col("ACKED FLOOR", "acked_floor"),
                col("DEAD", "dead_lettered"),
                col("PUSH", "push.state"),
            ];
            output::list(globals.json, &list, "consumer_groups", &columns)
        }
        GroupCommand::Create(args) => {
            let group = api.put(&group_path(&args.station, &args.group), &create_body(&args)?).await?;
            if globals.json {
                return output::json(&group);
            }
            eprintln!("depot: consumer group {} on {} is ready", args.group, args.station);
            if let Some(secret) = group["push"]["secret"].as_str() {
                eprintln!("depot: its push signing secret (shown only now): {secret}");
            }
            Ok(())
        }
        GroupCommand::Get { station, group } => show(api.get(&group_path(&station, &group)).await?, globals),
        GroupCommand::Seek(args) => {
            let body = match (args.offset, &args.time) {
                (Some(offset), _) => json!({ "offset": offset }),
                (None, Some(time)) => json!({ "time": time }),
                (None, None) => return Err(Failure::usage("give --offset or --time")),
            };
            let group = api.post(&format!("{}/seek", group_path(&args.station, &args.group)), &body).await?;
            show(group, globals)
        }
        GroupCommand::Rm { station, group } => {
            api.delete(&group_path(&station, &group)).await?;
            if globals.json {
                return output::json(&json!({ "deleted": group }));
            }
            eprintln!("depot: deleted consumer group {group} of {station}");
            Ok(())
        }
    }
}

fn show(group: Value, globals: &Globals) -> Result<(), Failure> {
    if globals.json {
        output::json(&group)
    } else {
        output::details(&group)
    }
}

fn create_body(args: &CreateArgs) -> Result<Value, Failure> {
    let mut body = Map::new();
    if let Some(start) = &args.start {
        let start = match start.as_str() {
            "earliest" | "latest" => json!(start),
            s if s.chars().all(|c| c.is_ascii_digit()) => {
                json!({ "offset": s.parse::<u64>().map_err(|e| Failure::usage(format!("--start {s}: {e}")))? })
            }
            s => json!({ "time": s }),
        };
        body.insert("start".to_owned(), start);
    }
    if let Some(v) = args.ack_wait_ms {
        body.insert("ack_wait_ms".to_owned(), json!(v));
    }
    if let Some(v) = args.max_deliveries {
        body.insert("max_deliveries".to_owned(), json!(v));
    }
    if !args.backoff_ms.is_empty() {
        body.insert("backoff_ms".to_owned(), json!(args.backoff_ms));
    }
    if let Some(v) = args.max_pending {
        body.insert("max_pending".to_owned(), json!(v));
    }
    if let Some(url) = &args.push_url {
        let mut push = Map::new();
        push.insert("url".to_owned(), json!(url));
        let mut headers = Map::new();
        for h in &args.push_header {
            let (name, value) =
                h.split_once('=').ok_or_else(|| Failure::usage(format!("--push-header {h:?} is not NAME=VALUE")))?;
            headers.insert(name.to_owned(), json!(value));
        }
        if !headers.is_empty() {
            push.insert("headers".to_owned(), Value::Object(headers));
        }
        if let Some(v) = args.push_timeout_ms {
            push.insert("timeout_ms".to_owned(), json!(v));
        }
        if let Some(v) = args.push_max_in_flight {
            push.insert("max_in_flight".to_owned(), json!(v));
        }
        body.insert("push".to_owned(), Value::Object(push));
    }
    Ok(Value::Object(body))
}
