//! `depot cluster status`.

use clap::Subcommand;

use super::failure::Failure;
use super::globals::Globals;
use super::http::Api;
use super::output::{self, cell, col, col_with};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The cluster's nodes, leader and term, as the answering node sees them (admin)
    Status,
}

pub async fn run(command: ClusterCommand, globals: &Globals, api: &mut Api) -> Result<(), Failure> {
    match command {
        ClusterCommand::Status => {
            let cluster = api.get("v1/cluster").await?;
            if globals.json {
                return output::json(&cluster);
            }
            output::out(&format!(
                "cluster {}  leader {}  term {}  (answered by node {})\n\n",
                cell(&cluster["cluster_id"]),
                cell(&cluster["leader_id"]),
                cell(&cluster["term"]),
                cell(&cluster["node_id"]),
            ))?;
            let leader = |n: &serde_json::Value| if n["id"] == cluster["leader_id"] { "leader" } else { "" }.to_owned();
            let columns = [
                col("ID", "id"),
                col("ROLE", "role"),
                col("API", "api_addr"),
                col("CLUSTER", "cluster_addr"),
                col("MATCHED", "matched_index"),
                col("REACHABLE", "reachable"),
                col_with("", &leader),
            ];
            output::table(&cluster["nodes"], &columns).print()
        }
    }
}
