//! `depot key create|ls|revoke` (API keys) and `depot user ls|create|rm`.

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::failure::Failure;
use super::globals::Globals;
use super::http::{seg, Api};
use super::output::{self, cell, Table};

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
            if globals.json {
                return output::json(&list);
            }
            let mut table = Table::new(&["ID", "NAME", "OWNER", "SCOPES", "CREATED", "EXPIRES"]);
            for k in list["api_keys"].as_array().into_iter().flatten() {
                let scopes: Vec<String> = k["scopes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        let actions: Vec<String> = s["actions"].as_array().into_iter().flatten().map(cell).collect();
                        format!("{}:{}", cell(&s["stations"]), actions.join(","))
                    })
                    .collect();
                table.row(vec![
                    cell(&k["id"]),
                    cell(&k["name"]),
                    cell(&k["owner"]),
                    scopes.join(" "),
                    cell(&k["created_at"]),
                    cell(&k["expires_at"]),
                ]);
            }
            table.print()
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

pub async fn users(command: UserCommand, globals: &Globals, api: &mut Api) -> Result<(), Failure> {
    match command {
        UserCommand::Ls => {
            let list = api.get("v1/users").await?;
            if globals.json {
                return output::json(&list);
            }
            let mut table = Table::new(&["USERNAME", "ROLE", "CREATED"]);
            for u in list["users"].as_array().into_iter().flatten() {
                table.row(vec![cell(&u["username"]), cell(&u["role"]), cell(&u["created_at"])]);
            }
            table.print()
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
