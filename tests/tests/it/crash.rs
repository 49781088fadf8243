//! Kill a producing broker with SIGKILL at random points, many times; after every restart each
//! acknowledged message must be present and intact.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use depot_broker::{Broker, BrokerOptions};
use depot_tests::{crash_payload, CRASH_STATION};
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() -> anyhow::Result<()> {
    let seed: u64 = std::env::var("DEPOT_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();

    for round in 0..ROUNDS {
        // Kill after a random number of acknowledgements, so the kill lands at a random point
        // of the write path (mid-append, mid-fsync, mid-apply, mid-snapshot).
        let kill_after = rng.random_range(1..1500usize);
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(dir.path())
            .arg(format!("r{round}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            // Only newline-terminated lines count: the kill may cut the last one short.
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                if line.last() != Some(&b'\n') {
                    break;
                }
                line.pop();
                if tx.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0usize;
        while seen < kill_after {
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(!left.is_zero(), "round {round}: the writer acknowledged only {seen} messages in 60 s");
            match rx.recv_timeout(left) {
                Ok(line) => {
                    record(&mut acked, &line)?;
                    seen += 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("round {round}: the writer exited early: {:?}", child.wait()?)
                }
            }
        }
        child.kill()?; // SIGKILL
        child.wait()?;
        reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
        // Lines printed before the kill are acknowledged too.
        for line in rx.try_iter() {
            record(&mut acked, &line)?;
        }

        let broker = Broker::open(BrokerOptions::new(dir.path())).await?;
        for (&offset, id) in &acked {
            let msg = broker
                .message(CRASH_STATION, offset)
                .await?
                .ok_or_else(|| anyhow::anyhow!("round {round}: acknowledged offset {offset} ({id}) is missing"))?;
            anyhow::ensure!(
                msg.payload.as_ref() == crash_payload(id).as_slice(),
                "round {round}: offset {offset} ({id}) has a different payload"
            );
        }
        broker.shutdown().await?;
    }
    eprintln!("crash test: seed {seed}, {ROUNDS} kills, {} acknowledged messages verified after each", acked.len());
    assert!(acked.len() >= 1000, "too few acknowledged messages to mean anything: {}", acked.len());
    // Recovery went through snapshots too: one exists, and the Raft log was purged behind it.
    assert!(dir.path().join("sm/current").exists(), "no snapshot was ever taken");
    let raft_segments = std::fs::read_dir(dir.path().join("raft/log"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count();
    let first = std::fs::read_dir(dir.path().join("raft/log"))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".log").and_then(|n| n.parse::<u64>().ok()))
        .min()
        .unwrap_or(0);
    assert!(first > 0, "the Raft log was never purged ({raft_segments} segments from index 0)");
    Ok(())
}

fn record(acked: &mut BTreeMap<u64, String>, line: &str) -> anyhow::Result<()> {
    let (offset, id) = line.split_once(' ').ok_or_else(|| anyhow::anyhow!("bad line {line:?}"))?;
    let offset: u64 = offset.parse()?;
    if let Some(previous) = acked.insert(offset, id.to_string()) {
        anyhow::bail!("offset {offset} acknowledged twice: {previous} and {id}");
    }
    Ok(())
}
