//! `depot hook ls|create|get|rm` (REST hooks) and `depot source ls|create|get|rm|rotate-token`
//! (webhooks in).

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::failure::Failure;
use super::globals::Globals;
use super::http::{seg, Api};
use super::output::{self, cell, col};

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// List hooks
    Ls,
    /// Subscribe a URL to a station's new messages; the signing secret is printed once
    Create {
        station: String,
        target_url: String,
        /// `whsec_` + base64 of 24-64 bytes; default: generated
        #[arg(long)]
        secret: Option<String>,
    },
    /// Show a hook and its delivery state
    Get { id: String },
    /// Delete a hook
    Rm { id: String },
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// List sources
    Ls,
    /// Create a source (or replace its configuration); its ingest URL is printed once
    Create(SourceArgs),
    /// Show a source and its counters
    Get { source: String },
    /// Delete a source
    Rm { source: String },
    /// Give a source a new ingest URL; the old one stops working
    RotateToken { source: String },
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    source: String,
    /// The station deliveries are produced on
    #[arg(long)]
    station: String,
    /// How the sender signs
    #[arg(long, value_parser = ["github", "stripe", "shopify", "standard_webhooks", "hmac_sha256"], requires = "secret")]
    scheme: Option<String>,
    /// The signing secret the sender was given
    #[arg(long, requires = "scheme")]
    secret: Option<String>,
    /// hmac_sha256: the header carrying the signature
    #[arg(long)]
    header: Option<String>,
    /// Request headers stored as message headers (repeatable)
    #[arg(long, value_name = "NAME")]
    capture_header: Vec<String>,
    /// The request header used as the idempotency key
    #[arg(long, value_name = "NAME")]
    idempotency_header: Option<String>,
}

pub async fn hooks(command: HookCommand, globals: &Globals, api: &mut Api) -> Result<(), Failure> {
    let shown = match command {
        HookCommand::Ls => {
            let list = api.get_all("v1/hooks", "hooks").await?;
            let columns = [
                col("ID", "id"),
                col("STATION", "station"),
                col("TARGET", "target_url"),
                col("STATE", "push.state"),
                col("DELIVERED", "push.delivered_total"),
                col("FAILED", "push.failed_total"),
                col("CREATED", "created_at"),
            ];
            return output::list(globals.json, &list, "hooks", &columns);
        }
        HookCommand::Create { station, target_url, secret } => {
            let mut body = json!({ "station": station, "target_url": target_url });
            if let Some(secret) = secret {
                body["secret"] = json!(secret);
            }
            let hook = api.post("v1/hooks", &body).await?;
            if !globals.json {
                eprintln!("depot: created hook {}; its signing secret is shown only now", cell(&hook["id"]));
            }
            hook
        }
        HookCommand::Get { id } => api.get(&format!("v1/hooks/{}", seg(&id))).await?,
        HookCommand::Rm { id } => {
            api.delete(&format!("v1/hooks/{}", seg(&id))).await?;
            return done(globals, json!({ "deleted": id }), &format!("deleted hook {id}"));
        }
    };
    show(&shown, globals)
}

pub async fn sources(command: SourceCommand, globals: &Globals, api: &mut Api) -> Result<(), Failure> {
    let shown = match command {
        SourceCommand::Ls => {
            let list = api.get_all("v1/sources", "sources").await?;
            let columns = [
                col("NAME", "name"),
                col("STATION", "station"),
                col("SCHEME", "verify.scheme"),
                col("ACCEPTED", "accepted_total"),
                col("REJECTED", "rejected_total"),
                col("CREATED", "created_at"),
            ];
            return output::list(globals.json, &list, "sources", &columns);
        }
        SourceCommand::Create(args) => {
            api.put(&format!("v1/sources/{}", seg(&args.source)), &source_body(&args)).await?
        }
        SourceCommand::Get { source } => api.get(&format!("v1/sources/{}", seg(&source))).await?,
        SourceCommand::Rm { source } => {
            api.delete(&format!("v1/sources/{}", seg(&source))).await?;
            return done(globals, json!({ "deleted": source }), &format!("deleted source {source}"));
        }
        SourceCommand::RotateToken { source } => {
            api.post(&format!("v1/sources/{}/rotate-token", seg(&source)), &json!({})).await?
        }
    };
    if let (false, Some(path)) = (globals.json, shown["ingest_url"].as_str()) {
        let full = api.base().join(path.trim_start_matches('/')).map_or_else(|_| path.to_owned(), |u| u.to_string());
        eprintln!("depot: the sender's URL (shown only now): {full}");
    }
    show(&shown, globals)
}

fn source_body(args: &SourceArgs) -> Value {
    let mut body = Map::new();
    body.insert("station".to_owned(), json!(args.station));
    if let (Some(scheme), Some(secret)) = (&args.scheme, &args.secret) {
        let mut verify = json!({ "scheme": scheme, "secret": secret });
        if let Some(header) = &args.header {
            verify["header"] = json!(header);
        }
        body.insert("verify".to_owned(), verify);
    }
    if !args.capture_header.is_empty() {
        body.insert("capture_headers".to_owned(), json!(args.capture_header));
    }
    if let Some(h) = &args.idempotency_header {
        body.insert("idempotency_header".to_owned(), json!(h));
    }
    Value::Object(body)
}

fn show(value: &Value, globals: &Globals) -> Result<(), Failure> {
    if globals.json {
        output::json(value)
    } else {
        output::details(value)
    }
}

fn done(globals: &Globals, json: Value, text: &str) -> Result<(), Failure> {
    if globals.json {
        return output::json(&json);
    }
    eprintln!("depot: {text}");
    Ok(())
}
