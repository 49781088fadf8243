//! `depot push pause|resume|rotate-secret|test|attempts`: push groups (create one with
//! `depot group create --push-url`, list them with `depot group ls`).

use clap::Subcommand;
use serde_json::{json, Value};

use super::failure::Failure;
use super::globals::Globals;
use super::http::{seg, Api};
use super::output::{self, cell, Table};

#[derive(Debug, Subcommand)]
pub enum PushCommand {
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
    let answer = match command {
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
            if globals.json {
                return output::json(&list);
            }
            let mut table = Table::new(&["AT", "OFFSET", "ATTEMPT", "STATUS", "LATENCY MS", "ERROR"]);
            for a in list["attempts"].as_array().into_iter().flatten() {
                table.row(vec![
                    cell(&a["at"]),
                    cell(&a["offset"]),
                    cell(&a["attempt"]),
                    cell(&a["status"]),
                    cell(&a["latency_ms"]),
                    cell(&a["error"]),
                ]);
            }
            return table.print();
        }
    };
    if globals.json {
        output::json(&answer)
    } else {
        output::details(&answer)
    }
}
