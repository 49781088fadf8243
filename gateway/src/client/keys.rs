//! `depot key create|ls|revoke` (API keys) and `depot user ls|create|rm`.

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::failure::Failure;
use super::globals::Globals;
use super::http::{seg, Api};
use super::output::{self, cell, col, col_with};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key; its secret is printed once
    Create(KeyArgs),
    /// List API keys (without their secrets)
    Ls,
    /// Revoke a key: it stops working at once on every node
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// A name for people
    name: String,
    /// A scope STATIONS:ACTIONS, e.g. `orders*:produce,consume` (repeatable; actions are
    /// produce, consume, manage, metrics)
    #[arg(long, value_name = "STATIONS:ACTIONS", required = true)]
    scope: Vec<String>,
    /// When the key stops working, RFC 3339
    #[arg(long, value_name = "TIME")]
    expires_at: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users
    Ls,
    /// Create a user; the password is asked for on a terminal, else read from stdin's first line
    Create {
        username: String,
        #[arg(long, value_parser = ["admin", "member"], default_value = "member")]
        role: String,
    },
    /// Delete a user
    Rm { username: String },
}

fn scope(text: &str) -> Result<Value, Failure> {
    let (stations, actions) = text.split_once(':').ok_or_else(|| {
        Failure::usage(format!("--scope {text:?}: expected STATIONS:ACTIONS, e.g. orders*:produce,consume"))
    })?;
    let actions: Vec<&str> = actions.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    Ok(json!({ "stations": stations, "actions": actions }))
}

pub async fn keys(command: KeyCommand, globals: &Globals, api: &mut Api) -> Result<(), Failure> {
    match command {
        KeyCommand::Create(args) => {
            let scopes = args.scope.iter().map(String::as_str).map(scope).collect::<Result<Vec<_>, _>>()?;
            let mut body = json!({ "name": args.name, "scopes": scopes });
            if let Some(at) = &args.expires_at {
                body["expires_at"] = json!(at);
            }
            let key = api.post("v1/api-keys", &body).await?;
            if globals.json {
                return output::json(&key);
            }
            eprintln!(
                "depot: created key {} ({}); its secret is shown only now:",
                cell(&key["id"]),
                cell(&key["name"])
            );
            output::out(&format!("{}\n", cell(&key["key"])))
        }
        KeyCommand::Ls => {
            let list = api.get("v1/api-keys").await?;
            let columns = [
                col("ID", "id"),
                col("NAME", "name"),
                col("OWNER", "owner"),
                col_with("SCOPES", &scopes),
                col("CREATED", "created_at"),
                col("EXPIRES", "expires_at"),
            ];
            output::list(globals.json, &list, "api_keys", &columns)
        }
        KeyCommand::Revoke { id } => {
            api.delete(&format!("v1/api-keys/{}", seg(&id))).await?;
            if globals.json {
                return output::json(&json!({ "revoked": id }));
            }
            eprintln!("depot: revoked key {id}");
            Ok(())
        }
    }
}

/// A key's scopes on one line: `STATIONS:ACTION,ACTION STATIONS:...`, as `--scope` takes them.
fn scopes(key: &Value) -> String {
    let scope = |s: &Value| {
        let actions: Vec<String> = s["actions"].as_array().into_iter().flatten().map(cell).collect();
        format!("{}:{}", cell(&s["stations"]), actions.join(","))
    };
    let scopes: Vec<String> = key["scopes"].as_array().into_iter().flatten().map(scope).collect();
    scopes.join(" ")
}

pub async fn users(command: UserCommand, globals: &Globals, api: &mut Api) -> Result<(), Failure> {
    match command {
        UserCommand::Ls => {
            let list = api.get("v1/users").await?;
            let columns = [col("USERNAME", "username"), col("ROLE", "role"), col("CREATED", "created_at")];
            output::list(globals.json, &list, "users", &columns)
        }
        UserCommand::Create { username, role } => {
            let password = if std::io::stdin().is_terminal() {
                rpassword::prompt_password(format!("Password for {username}: "))
                    .map_err(|e| Failure::other(format!("reading the password: {e}")))?
            } else {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut std::io::Read::take(std::io::stdin().lock(), 4096), &mut line)?;
                line.trim_end_matches(['\n', '\r']).to_owned()
            };
            if password.is_empty() {
                return Err(Failure::usage("expected the password on the first line of stdin"));
            }
            let user =
                api.post("v1/users", &json!({ "username": username, "password": password, "role": role })).await?;
            if globals.json {
                return output::json(&user);
            }
            eprintln!("depot: created user {username} ({role})");
            Ok(())
        }
        UserCommand::Rm { username } => {
            api.delete(&format!("v1/users/{}", seg(&username))).await?;
            if globals.json {
                return output::json(&json!({ "deleted": username }));
            }
            eprintln!("depot: deleted user {username}");
            Ok(())
        }
    }
}
