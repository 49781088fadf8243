//! `depot station ls|create|get|rm`.

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::failure::Failure;
use super::globals::Globals;
use super::http::{seg, Api};
use super::output::{self, col, col_with};

#[derive(Debug, Subcommand)]
pub enum StationCommand {
    /// List stations
    Ls,
    /// Create a station, or replace its configuration (omitted settings take their defaults)
    Create(CreateArgs),
    /// Show a station: configuration, stats and consumer groups
    Get { station: String },
    /// Delete a station and all its messages
    Rm { station: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    station: String,
    /// Retention: drop messages older than this (ms; default 7 days)
    #[arg(long, value_name = "MS")]
    max_age_ms: Option<u64>,
    /// Retention: keep at most this many messages
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Retention: keep at most this many bytes
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<u64>,
    /// Nodes that hold the station: 1, 3 or 5
    #[arg(long, value_parser = ["1", "3", "5"])]
    replicas: Option<String>,
    /// Idempotency keys are remembered this long (ms; default 120000)
    #[arg(long, value_name = "MS")]
    dedup_window_ms: Option<u64>,
    /// Largest message accepted (bytes; default 1 MiB)
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<u64>,
    /// Drop messages that exhaust their deliveries instead of keeping them as dead letters
    #[arg(long)]
    no_dead_letters: bool,
}

pub async fn run(command: StationCommand, globals: &Globals, api: &mut Api) -> Result<(), Failure> {
    match command {
        StationCommand::Ls => {
            let list = api.get_all("v1/stations", "stations").await?;
            let groups = |s: &Value| s["consumer_groups"].as_array().map_or(0, Vec::len).to_string();
            let columns = [
                col("NAME", "name"),
                col("MESSAGES", "stats.messages"),
                col("BYTES", "stats.bytes"),
                col("LAST OFFSET", "stats.last_offset"),
                col_with("GROUPS", &groups),
                col("CREATED", "created_at"),
            ];
            output::list(globals.json, &list, "stations", &columns)
        }
        StationCommand::Create(args) => {
            let station = api.put(&format!("v1/stations/{}", seg(&args.station)), &create_body(&args)).await?;
            if globals.json {
                return output::json(&station);
            }
            eprintln!("depot: station {} is ready", args.station);
            Ok(())
        }
        StationCommand::Get { station } => {
            let station = api.get(&format!("v1/stations/{}", seg(&station))).await?;
            if globals.json {
                return output::json(&station);
            }
            let mut shown = station.clone();
            if let Some(map) = shown.as_object_mut() {
                map.remove("consumer_groups");
            }
            output::details(&shown)?;
            output::out("\n")?;
            let columns = [col("GROUP", "name"), col("LAG", "lag"), col("PENDING", "pending")];
            output::table(&station["consumer_groups"], &columns).print()
        }
        StationCommand::Rm { station } => {
            api.delete(&format!("v1/stations/{}", seg(&station))).await?;
            if globals.json {
                return output::json(&json!({ "deleted": station }));
            }
            eprintln!("depot: deleted station {station}");
            Ok(())
        }
    }
}

fn create_body(args: &CreateArgs) -> Value {
    let mut body = Map::new();
    let mut retention = Map::new();
    for (name, value) in
        [("max_age_ms", args.max_age_ms), ("max_messages", args.max_messages), ("max_bytes", args.max_bytes)]
    {
        if let Some(v) = value {
            retention.insert(name.to_owned(), json!(v));
        }
    }
    if !retention.is_empty() {
        body.insert("retention".to_owned(), Value::Object(retention));
    }
    if let Some(r) = args.replicas.as_deref().and_then(|r| r.parse::<u64>().ok()) {
        body.insert("replicas".to_owned(), json!(r));
    }
    if let Some(v) = args.dedup_window_ms {
        body.insert("dedup_window_ms".to_owned(), json!(v));
    }
    if let Some(v) = args.max_message_bytes {
        body.insert("max_message_bytes".to_owned(), json!(v));
    }
    if args.no_dead_letters {
        body.insert("dead_letter".to_owned(), json!({ "enabled": false }));
    }
    Value::Object(body)
}
