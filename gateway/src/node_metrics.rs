//! The node's own series on `/metrics`: Raft, log fsyncs, disk, station sizes and the process.
//! All read at scrape time from the broker and `/proc`; nothing here is on a request's path.

use std::fmt::Write;

use depot_broker::disk::Space;
use depot_broker::log::{FsyncStats, FSYNC_BUCKETS};
use depot_broker::station::StationView;
use depot_broker::RaftStatus;

use crate::metrics::escape;
use crate::process_stats::ProcessStats;

/// What a scrape read of the node, besides the request and station series.
#[derive(Debug)]
pub struct NodeFigures<'a> {
    pub raft: RaftStatus,
    pub fsyncs: FsyncStats,
    /// `None` when the data dir's file system could not be asked.
    pub disk: Option<Space>,
    pub stations: &'a [StationView],
    pub process: ProcessStats,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

pub fn render_node(out: &mut String, n: &NodeFigures<'_>) {
    render_raft(out, &n.raft);
    render_fsyncs(out, &n.fsyncs);
    if let Some(disk) = n.disk {
        single(out, "depot_disk_free_bytes", "gauge", "Bytes free to Depot on the data dir's file system.", disk.free);
        single(out, "depot_disk_total_bytes", "gauge", "Size of the data dir's file system, in bytes.", disk.total);
        single(
            out,
            "depot_disk_min_free_bytes",
            "gauge",
            "The free-space watermark: produce is refused while free bytes are below it.",
            disk.min_free,
        );
    }
    render_stations(out, n.stations);
    render_process(out, &n.process);
}

fn render_raft(out: &mut String, r: &RaftStatus) {
    single(out, "depot_raft_term", "gauge", "The Raft term this node is in.", r.term);
    single(
        out,
        "depot_raft_last_log_index",
        "gauge",
        "Index of the last entry in this node's Raft log.",
        r.last_log_index,
    );
    if let Some(committed) = r.committed {
        single(
            out,
            "depot_raft_commit_index",
            "gauge",
            "Index of the last Raft entry this node knows is committed.",
            committed,
        );
        single(
            out,
            "depot_raft_apply_lag",
            "gauge",
            "Committed Raft entries this node has not applied yet (commit index minus last applied).",
            committed.saturating_sub(r.applied),
        );
    }
    single(
        out,
        "depot_raft_last_applied_index",
        "gauge",
        "Index of the last Raft entry applied to this node's state.",
        r.applied,
    );
    single(
        out,
        "depot_raft_leader_changes_total",
        "counter",
        "Times the leader this node knows of became a different node (the first one counts).",
        r.leader_changes,
    );
    single(out, "depot_raft_is_leader", "gauge", "1 while this node leads, else 0.", u8::from(r.leads));
    single(
        out,
        "depot_raft_has_leader",
        "gauge",
        "1 while this node knows a leader (itself or another), else 0.",
        u8::from(r.leader.is_some()),
    );
}

fn render_fsyncs(out: &mut String, f: &FsyncStats) {
    let name = "depot_log_fsync_duration_seconds";
    header(
        out,
        name,
        "histogram",
        "Time each fsync of a Raft-log or station-log file or directory took (the Raft log's are on every write's path).",
    );
    let mut cumulative = 0u64;
    for (le, n) in FSYNC_BUCKETS.iter().zip(f.buckets) {
        cumulative = cumulative.saturating_add(n);
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    // The count is read after the buckets, so never below them; max() keeps it so regardless.
    let count = f.count.max(cumulative);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", f.sum_nanos as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {count}");
}

fn render_stations(out: &mut String, stations: &[StationView]) {
    type Pick = fn(&StationView) -> u64;
    let gauges: [(&str, &str, Pick); 4] = [
        ("depot_station_messages", "Messages a station retains.", |s| s.stats.messages),
        ("depot_station_bytes", "Payload bytes of the messages a station retains (local and tiered).", |s| {
            s.stats.bytes
        }),
        (
            "depot_station_local_bytes",
            "Bytes of a station's log files on this node's disk (segments and their metadata).",
            |s| s.local_bytes,
        ),
        ("depot_station_tiered_bytes", "Bytes of a station's segments in the tiering bucket.", |s| s.tiered.bytes),
    ];
    for (name, help, pick) in gauges {
        header(out, name, "gauge", help);
        for station in stations {
            let _ = writeln!(out, "{name}{{station=\"{}\"}} {}", escape(&station.name), pick(station));
        }
    }
}

fn render_process(out: &mut String, p: &ProcessStats) {
    if let Some(v) = p.resident_bytes {
        single(out, "depot_process_resident_memory_bytes", "gauge", "Resident memory of the process, in bytes.", v);
    }
    if let Some(v) = p.virtual_bytes {
        single(out, "depot_process_virtual_memory_bytes", "gauge", "Virtual memory of the process, in bytes.", v);
    }
    if let Some(v) = p.cpu_seconds {
        single(
            out,
            "depot_process_cpu_seconds_total",
            "counter",
            "User and system CPU time the process used, in seconds.",
            v,
        );
    }
    if let Some(v) = p.start_time_seconds {
        single(
            out,
            "depot_process_start_time_seconds",
            "gauge",
            "When the process started, in seconds since the Unix epoch.",
            v,
        );
    }
    if let Some(v) = p.max_fds {
        single(out, "depot_process_max_fds", "gauge", "The process's soft limit on open file descriptors.", v);
    }
    if let Some(v) = p.threads {
        single(out, "depot_process_threads", "gauge", "Threads of the process.", v);
    }
}
