//! `depot cluster status`.

use clap::Subcommand;

use super::failure::Failure;
use super::globals::Globals;
use super::http::Api;
use super::output::{self, cell, Table};

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
            let mut table = Table::new(&["ID", "ROLE", "API", "CLUSTER", "MATCHED", "REACHABLE", ""]);
            for n in cluster["nodes"].as_array().into_iter().flatten() {
                let leader = if n["id"] == cluster["leader_id"] { "leader" } else { "" };
                table.row(vec![
                    cell(&n["id"]),
                    cell(&n["role"]),
                    cell(&n["api_addr"]),
                    cell(&n["cluster_addr"]),
                    cell(&n["matched_index"]),
                    cell(&n["reachable"]),
                    leader.to_owned(),
                ]);
            }
            table.print()
        }
    }
}
