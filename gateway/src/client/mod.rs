//! The client commands of the `depot` binary: `login`, `context`, `station`, `produce`,
//! `consume`, `group`, `dls`, `key`, `user`, `cluster`, `hook`, `source`, `push`, `completions`.
//!
//! They talk to a server over its HTTP API (API.md) and link nothing of the server: each
//! resource file turns flags into a request and the server's JSON into a table (or prints the
//! JSON with `--json`). `http::connect` finds the server and the credentials, `session` keeps
//! the access token fresh (rotating the refresh token stored by `config`), `http` sends, `output`
//! prints, `failure` maps every error to a documented exit code. docs/cli.md is the guide.

mod cluster;
mod config;
mod dead_letters;
mod failure;
mod globals;
mod groups;
mod hooks;
mod http;
mod keys;
mod login;
mod messages;
mod output;
mod push;
mod session;
mod stations;

use clap::Subcommand;

pub use failure::{Exit, Failure, EXIT_CODES};
use globals::Globals;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Log in to a server (password or API key) and store it as a context
    #[command(after_help = EXIT_CODES)]
    Login(login::LoginArgs),
    /// Revoke the context's session on the server and forget it
    #[command(after_help = EXIT_CODES)]
    Logout {
        #[command(flatten)]
        globals: Globals,
    },
    /// Print an access token for other tools (curl -H "Authorization: Bearer $(depot token)")
    #[command(after_help = EXIT_CODES)]
    Token(login::TokenArgs),
    /// The stored servers: ls, use, rm
    #[command(after_help = EXIT_CODES)]
    Context {
        #[command(subcommand)]
        command: login::ContextCommand,
        #[command(flatten)]
        globals: Globals,
    },
    /// Stations: ls, create, get, rm
    #[command(after_help = EXIT_CODES)]
    Station {
        #[command(subcommand)]
        command: stations::StationCommand,
        #[command(flatten)]
        globals: Globals,
    },
    /// Produce the lines of stdin (or of --file) as messages, in batches
    #[command(after_help = EXIT_CODES)]
    Produce(messages::ProduceArgs),
    /// Fetch messages of a consumer group, print their payloads and ack them
    #[command(after_help = EXIT_CODES)]
    Consume(messages::ConsumeArgs),
    /// Consumer groups: ls, create, get, seek, rm
    #[command(after_help = EXIT_CODES)]
    Group {
        #[command(subcommand)]
        command: groups::GroupCommand,
        #[command(flatten)]
        globals: Globals,
    },
    /// Dead letters: ls, redrive, rm
    #[command(after_help = EXIT_CODES)]
    Dls {
        #[command(subcommand)]
        command: dead_letters::DlsCommand,
        #[command(flatten)]
        globals: Globals,
    },
    /// API keys: create, ls, revoke
    #[command(after_help = EXIT_CODES)]
    Key {
        #[command(subcommand)]
        command: keys::KeyCommand,
        #[command(flatten)]
        globals: Globals,
    },
    /// Users: ls, create, rm (admin)
    #[command(after_help = EXIT_CODES)]
    User {
        #[command(subcommand)]
        command: keys::UserCommand,
        #[command(flatten)]
        globals: Globals,
    },
    /// The cluster: status (admin)
    #[command(after_help = EXIT_CODES)]
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
        #[command(flatten)]
        globals: Globals,
    },
    /// REST hooks (push subscriptions to a station): ls, create, get, rm
    #[command(after_help = EXIT_CODES)]
    Hook {
        #[command(subcommand)]
        command: hooks::HookCommand,
        #[command(flatten)]
        globals: Globals,
    },
    /// Sources (signed webhooks in): ls, create, get, rm, rotate-token
    #[command(after_help = EXIT_CODES)]
    Source {
        #[command(subcommand)]
        command: hooks::SourceCommand,
        #[command(flatten)]
        globals: Globals,
    },
    /// Push groups: ls, create, get, rm, pause, resume, rotate-secret, test, attempts
    #[command(after_help = EXIT_CODES)]
    Push {
        #[command(subcommand)]
        command: push::PushCommand,
        #[command(flatten)]
        globals: Globals,
    },
    /// Print a completion script: depot completions bash > /etc/bash_completion.d/depot
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Whether `name` is one of the client commands (their usage errors exit 2).
pub fn is_client_command(name: &str) -> bool {
    <ClientCommand as Subcommand>::has_subcommand(name)
}

/// Runs a client command; `grammar` is the whole command line's, for completions.
pub async fn run(command: ClientCommand, grammar: clap::Command) -> Result<(), Failure> {
    use http::connect;
    match command {
        ClientCommand::Login(args) => login::login(args).await,
        ClientCommand::Logout { globals } => login::logout(globals).await,
        ClientCommand::Token(args) => login::token(args).await,
        ClientCommand::Context { command, globals } => login::context(command, globals),
        ClientCommand::Station { command, globals } => stations::run(command, &globals, &mut connect(&globals)?).await,
        ClientCommand::Produce(args) => {
            let mut api = connect(&args.globals)?;
            messages::produce(args, &mut api).await
        }
        ClientCommand::Consume(args) => {
            let mut api = connect(&args.globals)?;
            messages::consume(args, &mut api).await
        }
        ClientCommand::Group { command, globals } => groups::run(command, &globals, &mut connect(&globals)?).await,
        ClientCommand::Dls { command, globals } => dead_letters::run(command, &globals, &mut connect(&globals)?).await,
        ClientCommand::Key { command, globals } => keys::keys(command, &globals, &mut connect(&globals)?).await,
        ClientCommand::User { command, globals } => keys::users(command, &globals, &mut connect(&globals)?).await,
        ClientCommand::Cluster { command, globals } => cluster::run(command, &globals, &mut connect(&globals)?).await,
        ClientCommand::Hook { command, globals } => hooks::hooks(command, &globals, &mut connect(&globals)?).await,
        ClientCommand::Source { command, globals } => hooks::sources(command, &globals, &mut connect(&globals)?).await,
        ClientCommand::Push { command, globals } => push::run(command, &globals, &mut connect(&globals)?).await,
        ClientCommand::Completions { shell } => {
            let mut grammar = grammar;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut grammar, "depot", &mut script);
            output::out_bytes(&script)
        }
    }
}
