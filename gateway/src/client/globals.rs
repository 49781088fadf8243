//! The flags every client command takes, before or after its subcommand.

use clap::Args;

#[derive(Clone, Debug, Default, Args)]
pub struct Globals {
    /// Print the server's JSON instead of a table (for scripts)
    #[arg(long, global = true)]
    pub json: bool,
    /// The stored server to use (see `depot context ls`); default: the current one
    #[arg(long, global = true, value_name = "NAME", env = "DEPOT_CONTEXT")]
    pub context: Option<String>,
}
