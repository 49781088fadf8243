//! The cluster's membership (administrators only). Any node answers; changes are made by the
//! leader, to which the node asked forwards them.

use actix_web::{delete, get, post, web, HttpResponse};
use depot_broker::cluster::{ClusterView, NodeView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::extract::AdminInPerson;
use crate::auth::Authorized;
use crate::encoding;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(get_cluster).service(add_node).service(remove_node);
}

/// Longest address accepted (host:port).
const MAX_ADDR: usize = 255;

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterBody {
    pub cluster_id: String,
    /// The node that answered.
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub term: u64,
    /// The answering node's last log index and last applied index.
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub nodes: Vec<NodeBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeBody {
    pub id: u64,
    /// Empty until the node has told the leader.
    pub api_addr: String,
    pub cluster_addr: String,
    /// `voter` or `learner`.
    #[schema(example = "voter")]
    pub role: String,
    /// How far this node's log matches the leader's; known when the leader answers.
    pub matched_index: Option<u64>,
    /// Whether the answering node reached it just now.
    pub reachable: bool,
}

impl From<ClusterView> for ClusterBody {
    fn from(v: ClusterView) -> Self {
        ClusterBody {
            cluster_id: v.cluster_id,
            node_id: v.node_id,
            leader_id: v.leader_id,
            term: v.term,
            last_log_index: v.last_log_index,
            last_applied: v.last_applied,
            nodes: v.nodes.into_iter().map(NodeBody::from).collect(),
        }
    }
}

impl From<NodeView> for NodeBody {
    fn from(n: NodeView) -> Self {
        NodeBody {
            id: n.id,
            api_addr: n.api_addr,
            cluster_addr: n.cluster_addr,
            role: n.role,
            matched_index: n.matched_index,
            reachable: n.reachable,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNodeBody {
    #[schema(minimum = 1)]
    pub id: u64,
    /// host:port of its public API.
    #[schema(
        min_length = 3,
        max_length = 255,
        pattern = r"^[!-~]+:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    )]
    pub api_addr: String,
    /// host:port of its cluster port.
    #[schema(
        min_length = 3,
        max_length = 255,
        pattern = r"^[!-~]+:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    )]
    pub cluster_addr: String,
}

fn check_addr(what: &str, addr: &str) -> Result<(), ApiError> {
    let valid = !addr.is_empty()
        && addr.len() <= MAX_ADDR
        && addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
        && addr.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(ApiError::InvalidBody(format!("{what} must be host:port (at most {MAX_ADDR} characters)")))
    }
}

/// The cluster as the node asked sees it: leader, term, and each member with its role.
#[utoipa::path(tag = "cluster", responses((status = 200, body = ClusterBody)))]
#[get("/v1/cluster")]
async fn get_cluster(_auth: Authorized<AdminInPerson>, state: web::Data<AppState>) -> web::Json<ClusterBody> {
    web::Json(state.broker.cluster_view().await.into())
}

/// Add a node: it joins as a learner, catches up from the log or a snapshot, and then becomes a
/// voter. Answers once it votes (up to a minute); if it has not caught up by then, 503, and it
/// stays a learner until the call is repeated.
#[utoipa::path(
    tag = "cluster",
    request_body = NewNodeBody,
    responses(
        (status = 200, body = ClusterBody),
        (status = 400, description = "invalid_body", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "membership_conflict: this node runs without a cluster port, or another membership change is in progress", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "not_leader_unavailable: no leader, or the node did not catch up in time", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/cluster/nodes")]
async fn add_node(
    auth: Authorized<AdminInPerson>,
    state: web::Data<AppState>,
    body: encoding::Json<NewNodeBody>,
) -> Result<web::Json<ClusterBody>, ApiError> {
    let body = body.into_inner();
    if body.id == 0 {
        return Err(ApiError::InvalidBody("id must be at least 1".to_owned()));
    }
    check_addr("api_addr", &body.api_addr)?;
    check_addr("cluster_addr", &body.cluster_addr)?;
    let detail = serde_json::json!({"api_addr": body.api_addr, "cluster_addr": body.cluster_addr});
    state.broker.add_node(body.id, body.api_addr, body.cluster_addr).await?;
    state.audit(&auth.principal, "cluster.add_node", &body.id.to_string(), detail).await;
    Ok(web::Json(state.broker.cluster_view().await.into()))
}

/// Remove a node from the cluster (voter or learner).
#[utoipa::path(
    tag = "cluster",
    params(("id" = u64, Path, description = "Node id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "invalid_request: the id is not a node id", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "membership_conflict: the last voter, no cluster port, or another change in progress", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: not a member", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "not_leader_unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/cluster/nodes/{id}")]
async fn remove_node(
    auth: Authorized<AdminInPerson>,
    state: web::Data<AppState>,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    state.broker.remove_node(id).await?;
    state.audit(&auth.principal, "cluster.remove_node", &id.to_string(), serde_json::json!({})).await;
    Ok(HttpResponse::NoContent().finish())
}
