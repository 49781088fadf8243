//! `depot push ls|create|get|rm|pause|resume|rotate-secret|test|attempts`: push groups, the
//! consumer groups that deliver to a URL (also shown by `depot group ...`).

use clap::Subcommand;
use serde_json::{json, Value};

use super::failure::Failure;
use super::globals::Globals;
use super::http::{seg, Api};
use super::output::{self, col};

#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// List a station's push groups
    Ls { station: String },
    /// Create a push group delivering each message to URL (or replace its configuration); its
    /// signing secret is printed once
    Create {
        station: String,
        group: String,
        url: String,
        /// `whsec_` + base64 of 24-64 bytes; default: generated
        #[arg(long)]
        secret: Option<String>,
        /// A header sent with each delivery, NAME=VALUE (repeatable)
        #[arg(long, value_name = "NAME=VALUE")]
        header: Vec<String>,
        /// A delivery's timeout, 1000-60000 ms (default 15000)
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<u64>,
        /// Deliveries in flight at once, 1-1000 (default 16)
        #[arg(long, value_name = "N")]
        max_in_flight: Option<u32>,
        /// Where the group starts: earliest, latest (default earliest)
        #[arg(long, value_parser = ["earliest", "latest"])]
        start: Option<String>,
    },
    /// Show a push group: delivery state, totals, last error
    Get { station: String, group: String },
    /// Delete a push group
    Rm { station: String, group: String },
    /// Stop delivering (messages are kept)
    Pause { station: String, group: String },
    /// Deliver again, also after the target disabled the group with a 410
    Resume { station: String, group: String },
    /// A new signing secret; the old one keeps signing for --old-valid-ms (default one day)
    RotateSecret {
        station: String,
        group: String,
        #[arg(long, value_name = "MS")]
        old_valid_ms: Option<u64>,
    },
    /// Send one signed test event to the group's URL (nothing is stored)
    Test {
        station: String,
        group: String,
        /// The test payload, JSON (default: the server's sample)
        #[arg(long, value_name = "JSON")]
        payload: Option<String>,
    },
    /// Recent delivery attempts, newest first
    Attempts { station: String, group: String },
}

pub async fn run(command: PushCommand, globals: &Globals, api: &mut Api) -> Result<(), Failure> {
    let path = |station: &str, group: &str, action: &str| {
        format!("v1/stations/{}/consumer-groups/{}/push/{action}", seg(station), seg(group))
    };
    let group_path =
        |station: &str, group: &str| format!("v1/stations/{}/consumer-groups/{}", seg(station), seg(group));
    let answer = match command {
        PushCommand::Ls { station } => {
            let list = api.get(&format!("v1/stations/{}/consumer-groups", seg(&station))).await?;
            let push: Vec<Value> = list["consumer_groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|g| g.get("push").is_some_and(|p| !p.is_null()))
                .cloned()
                .collect();
            if globals.json {
                return output::json(&json!({ "consumer_groups": push }));
            }
            let columns = [
                col("NAME", "name"),
                col("URL", "push.url"),
                col("STATE", "push.state"),
                col("LAG", "lag"),
                col("IN FLIGHT", "push.in_flight"),
                col("DELIVERED", "push.delivered_total"),
                col("FAILED", "push.failed_total"),
                col("LAST ERROR", "push.last_error"),
            ];
            return output::table(&Value::Array(push), &columns).print();
        }
        PushCommand::Create { station, group, url, secret, header, timeout_ms, max_in_flight, start } => {
            let mut push = json!({ "url": url });
            if let Some(secret) = secret {
                push["secret"] = json!(secret);
            }
            let mut headers = serde_json::Map::new();
            for h in &header {
                let (name, value) =
                    h.split_once('=').ok_or_else(|| Failure::usage(format!("--header {h:?} is not NAME=VALUE")))?;
                headers.insert(name.to_owned(), json!(value));
            }
            if !headers.is_empty() {
                push["headers"] = Value::Object(headers);
            }
            if let Some(ms) = timeout_ms {
                push["timeout_ms"] = json!(ms);
            }
            if let Some(n) = max_in_flight {
                push["max_in_flight"] = json!(n);
            }
            let mut body = json!({ "push": push });
            if let Some(start) = start {
                body["start"] = json!(start);
            }
            let created = api.put(&group_path(&station, &group), &body).await?;
            if !globals.json {
                if let Some(secret) = created["push"]["secret"].as_str() {
                    eprintln!("depot: push group {group} is ready; its signing secret (shown only now): {secret}");
                }
            }
            created
        }
        PushCommand::Get { station, group } => api.get(&group_path(&station, &group)).await?,
        PushCommand::Rm { station, group } => {
            api.delete(&group_path(&station, &group)).await?;
            if globals.json {
                return output::json(&json!({ "deleted": group }));
            }
            eprintln!("depot: deleted push group {group} of {station}");
            return Ok(());
        }
        PushCommand::Pause { station, group } => api.post(&path(&station, &group, "pause"), &json!({})).await?,
        PushCommand::Resume { station, group } => api.post(&path(&station, &group, "resume"), &json!({})).await?,
        PushCommand::RotateSecret { station, group, old_valid_ms } => {
            let body = old_valid_ms.map_or_else(|| json!({}), |ms| json!({ "old_valid_ms": ms }));
            api.post(&path(&station, &group, "rotate-secret"), &body).await?
        }
        PushCommand::Test { station, group, payload } => {
            let body = match payload {
                Some(text) => {
                    let payload: Value = serde_json::from_str(&text)
                        .map_err(|e| Failure::usage(format!("--payload is not JSON: {e}")))?;
                    json!({ "payload": payload })
                }
                None => json!({}),
            };
            api.post(&path(&station, &group, "test"), &body).await?
        }
        PushCommand::Attempts { station, group } => {
            let list = api.get(&path(&station, &group, "attempts")).await?;
            let columns = [
                col("AT", "at"),
                col("OFFSET", "offset"),
                col("ATTEMPT", "attempt"),
                col("STATUS", "status"),
                col("LATENCY MS", "latency_ms"),
                col("ERROR", "error"),
            ];
            return output::list(globals.json, &list, "attempts", &columns);
        }
    };
    if globals.json {
        output::json(&answer)
    } else {
        output::details(&answer)
    }
}
