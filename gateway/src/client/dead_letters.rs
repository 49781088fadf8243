//! `depot dls ls|redrive|rm`: a station's dead letters.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::failure::Failure;
use super::globals::Globals;
use super::http::{seg, Api};
use super::output::{self, col};

/// Ids per redrive request.
const REDRIVE_CHUNK: usize = 1000;

#[derive(Debug, Subcommand)]
pub enum DlsCommand {
    /// List a station's dead letters, oldest first
    Ls(ListArgs),
    /// Send dead letters back to their groups (attempts reset): the ids given, else every dead
    /// letter of --group, else every one of the station
    Redrive(RedriveArgs),
    /// Delete dead letters by id
    Rm {
        station: String,
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    station: String,
    /// Only this group's dead letters
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Only those dead-lettered for this reason
    #[arg(long, value_parser = ["max_deliveries", "explicit", "expired"])]
    reason: Option<String>,
    /// Include each message (while retention still holds it); shown with --json
    #[arg(long)]
    payload: bool,
}

#[derive(Debug, Args)]
pub struct RedriveArgs {
    station: String,
    /// Dead letter ids (repeatable, or comma-separated)
    #[arg(long = "id", value_name = "ID", value_delimiter = ',', conflicts_with = "group")]
    ids: Vec<u64>,
    /// Every dead letter of this group
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
}

pub async fn run(command: DlsCommand, globals: &Globals, api: &mut Api) -> Result<(), Failure> {
    match command {
        DlsCommand::Ls(args) => {
            let mut query = vec![format!("include_payload={}", args.payload)];
            if let Some(group) = &args.group {
                query.push(format!("consumer_group={}", seg(group)));
            }
            if let Some(reason) = &args.reason {
                query.push(format!("reason={}", seg(reason)));
            }
            let path = format!("v1/stations/{}/dead-letters?{}", seg(&args.station), query.join("&"));
            let list = api.get_all(&path, "dead_letters").await?;
            let columns = [
                col("ID", "id"),
                col("OFFSET", "offset"),
                col("GROUP", "consumer_group"),
                col("REASON", "reason"),
                col("ATTEMPTS", "attempts"),
                col("DEAD AT", "dead_at"),
                col("LAST ERROR", "last_error"),
            ];
            output::list(globals.json, &list, "dead_letters", &columns)
        }
        DlsCommand::Redrive(args) => {
            let path = format!("v1/stations/{}/dead-letters/redrive", seg(&args.station));
            let mut redriven = 0u64;
            if args.ids.is_empty() {
                let body = match &args.group {
                    Some(group) => json!({ "consumer_group": group }),
                    None => json!({}),
                };
                redriven = count(&api.post(&path, &body).await?)?;
            } else {
                let bar = output::progress(Some(args.ids.len() as u64), "dead letters", false);
                for chunk in args.ids.chunks(REDRIVE_CHUNK) {
                    redriven += count(&api.post(&path, &json!({ "ids": chunk })).await?)?;
                    bar.inc(chunk.len() as u64);
                }
                bar.finish_and_clear();
            }
            if globals.json {
                return output::json(&json!({ "redriven": redriven }));
            }
            eprintln!("depot: redrove {redriven} dead letters");
            Ok(())
        }
        DlsCommand::Rm { station, ids } => {
            let bar = output::progress(Some(ids.len() as u64), "dead letters", false);
            for id in &ids {
                api.delete(&format!("v1/stations/{}/dead-letters/{id}", seg(&station))).await?;
                bar.inc(1);
            }
            bar.finish_and_clear();
            if globals.json {
                return output::json(&json!({ "deleted": ids }));
            }
            eprintln!("depot: deleted {} dead letters", ids.len());
            Ok(())
        }
    }
}

fn count(answer: &Value) -> Result<u64, Failure> {
    answer["redriven"].as_u64().ok_or_else(|| Failure::other(format!("unexpected answer: {answer}")))
}
