//! `depot login`, `depot logout`, `depot token` and `depot context ...`: the stored servers.

use std::io::{BufRead, IsTerminal};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::config::{self, ConfigLock, Context};
use super::failure::{self, Failure};
use super::globals::Globals;
use super::http;
use super::output::{self, Table};
use super::session;

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The server, e.g. http://127.0.0.1:4444; default: the context's URL, or DEPOT_URL
    url: Option<String>,
    /// Log in with an API key (`dk_...`); `-` reads it from stdin
    #[arg(long, value_name = "KEY", conflicts_with = "username")]
    api_key: Option<String>,
    /// The user; asked for on a terminal. Without a terminal the password is the first line of stdin
    #[arg(long, short)]
    username: Option<String>,
    #[command(flatten)]
    globals: Globals,
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// List the stored servers; `*` marks the current one
    Ls,
    /// Make NAME the current context
    Use { name: String },
    /// Forget NAME here (`depot logout --context NAME` also revokes its session on the server)
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Trade the refresh token for a new pair now, even if the access token is still valid
    #[arg(long)]
    refresh: bool,
    #[command(flatten)]
    globals: Globals,
}

/// `depot login`: trades a password or an API key for a token pair and stores the context.
pub async fn login(args: LoginArgs) -> Result<(), Failure> {
    let path = config::path()?;
    let file = config::load(&path)?;
    let url = match (args.url.clone(), std::env::var("DEPOT_URL").ok().filter(|u| !u.is_empty())) {
        (Some(url), _) | (None, Some(url)) => url,
        (None, None) => match file.context(args.globals.context.as_deref()) {
            Ok((_, context)) => context.url.clone(),
            Err(_) => return Err(Failure::usage("give the server's URL: depot login http://HOST:PORT")),
        },
    };
    let url = session::parse_url(&url)?;
    let (body, principal) = match &args.api_key {
        Some(key) => {
            let key = if key == "-" { first_line_of_stdin("the API key")? } else { key.clone() };
            (json!({ "api_key": key.trim() }), "api key".to_owned())
        }
        None => {
            let username = match &args.username {
                Some(u) => u.clone(),
                None if std::io::stdin().is_terminal() => prompt("Username: ")?,
                None => return Err(Failure::usage("give --username (the password is then read from stdin)")),
            };
            let password = if std::io::stdin().is_terminal() {
                rpassword::prompt_password("Password: ")
                    .map_err(|e| Failure::other(format!("reading the password: {e}")))?
            } else {
                first_line_of_stdin("the password")?
            };
            (json!({ "username": username, "password": password }), username)
        }
    };
    let http = http::client()?;
    let issued = session::post_token(&http, &url, "v1/auth/token", &body).await?;
    let name = args.globals.context.clone().unwrap_or_else(|| config::default_name(&url));
    let _lock = ConfigLock::take(&path)?;
    let mut file = config::load(&path)?;
    let replaced = file.contexts.insert(
        name.clone(),
        Context {
            url: url.to_string(),
            principal: principal.clone(),
            refresh_token: issued.refresh_token,
            access_token: Some(issued.access_token),
            access_expires_at: Some(issued.expires_at),
        },
    );
    file.current = Some(name.clone());
    config::save(&path, &file)?;
    // The session this login replaces is of no more use: ending it is a courtesy, sent to the
    // server that issued it (the name may have pointed elsewhere).
    let old_revoke =
        replaced.and_then(|old| Some((session::parse_url(&old.url).ok()?.join("v1/auth/revoke").ok()?, old)));
    if let Some((revoke, old)) = old_revoke {
        let body = json!({ "refresh_token": old.refresh_token }).to_string();
        let _ = http.post(revoke).header("content-type", "application/json").body(body).send().await;
    }
    if args.globals.json {
        return output::json(&json!({ "context": name, "url": url.as_str(), "principal": principal }));
    }
    eprintln!("depot: logged in to {url} as {principal}; context {name} (stored in {})", path.display());
    Ok(())
}

/// `depot logout`: revokes the context's session on the server, then forgets it.
pub async fn logout(globals: Globals) -> Result<(), Failure> {
    let path = config::path()?;
    let _lock = ConfigLock::take(&path)?;
    let mut file = config::load(&path)?;
    let (name, context) = file.context(globals.context.as_deref())?;
    let url = session::parse_url(&context.url)?;
    let response = http::client()?
        .post(url.join("v1/auth/revoke").map_err(|e| Failure::other(e.to_string()))?)
        .header("content-type", "application/json")
        .body(json!({ "refresh_token": context.refresh_token }).to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    failure::answer(status, &response.bytes().await?)?;
    file.contexts.remove(&name);
    if file.current.as_deref() == Some(name.as_str()) {
        file.current = None;
    }
    config::save(&path, &file)?;
    eprintln!("depot: logged out of {url} (context {name} removed)");
    Ok(())
}

/// `depot token`: an access token for other tools (`curl -H "Authorization: Bearer $(depot token)"`).
pub async fn token(args: TokenArgs) -> Result<(), Failure> {
    let mut api = http::connect(&args.globals)?;
    let token = api.token(args.refresh).await?;
    if args.globals.json {
        return output::json(&json!({ "access_token": token }));
    }
    output::out(&format!("{token}\n"))
}

pub fn context(command: ContextCommand, globals: Globals) -> Result<(), Failure> {
    let path = config::path()?;
    let _lock = ConfigLock::take(&path)?;
    let mut file = config::load(&path)?;
    match command {
        ContextCommand::Ls => {
            if globals.json {
                let list: Vec<Value> = file
                    .contexts
                    .iter()
                    .map(|(name, c)| {
                        json!({"name": name, "url": c.url, "principal": c.principal,
                               "current": file.current.as_deref() == Some(name.as_str())})
                    })
                    .collect();
                return output::json(&json!({ "contexts": list }));
            }
            let mut table = Table::new(&["", "NAME", "URL", "PRINCIPAL"]);
            for (name, c) in &file.contexts {
                let current = if file.current.as_deref() == Some(name.as_str()) { "*" } else { "" };
                table.row(vec![current.to_owned(), name.clone(), c.url.clone(), c.principal.clone()]);
            }
            table.print()
        }
        ContextCommand::Use { name } => {
            file.context(Some(&name))?;
            file.current = Some(name.clone());
            config::save(&path, &file)?;
            eprintln!("depot: using context {name}");
            Ok(())
        }
        ContextCommand::Rm { name } => {
            file.context(Some(&name))?;
            file.contexts.remove(&name);
            if file.current.as_deref() == Some(name.as_str()) {
                file.current = None;
            }
            config::save(&path, &file)?;
            eprintln!("depot: removed context {name}");
            Ok(())
        }
    }
}

fn prompt(what: &str) -> Result<String, Failure> {
    eprint!("{what}");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// The first line of stdin without its line ending; at most 4 KiB are read.
fn first_line_of_stdin(what: &str) -> Result<String, Failure> {
    use std::io::Read;
    let mut line = String::new();
    std::io::stdin().lock().take(4096).read_line(&mut line)?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        return Err(Failure::usage(format!("expected {what} on the first line of stdin")));
    }
    Ok(line)
}
