//! Produces to a station as fast as it can and prints `offset id` for every acknowledged
//! message, until it is killed. Used by the crash test as the process that gets SIGKILLed.

use std::io::Write;

use bytes::Bytes;
use depot_broker::station::{Command, NewMessage, Outcome, StationConfig};
use depot_broker::{Broker, BrokerOptions};
use depot_tests::{crash_payload, CRASH_STATION};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(run)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: crash-writer DATA_DIR RUN_ID");
    };
    let mut opts = BrokerOptions::new(dir);
    opts.snapshot_every = 64;
    opts.segment_bytes = 256 << 10;
    let broker = Broker::open(opts).await?;
    let put = Command::PutStation { station: CRASH_STATION.into(), config: StationConfig::default() };
    broker.submit(put).await?;
    let mut writers = Vec::new();
    for task in 0..16u32 {
        let broker = broker.clone();
        let run = run.clone();
        writers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                // Every fourth request is a batch, so both single and batched produce are killed mid-flight.
                let count = if seq.is_multiple_of(4) { 5 } else { 1 };
                let ids: Vec<String> = (0..count).map(|i| format!("{run}-{task}-{seq}-{i}")).collect();
                seq += 1;
                let messages = ids
                    .iter()
                    .map(|id| NewMessage {
                        content_type: "application/octet-stream".into(),
                        headers: vec![("id".into(), id.clone())],
                        payload: Bytes::from(crash_payload(id)),
                        idempotency_key: None,
                        deliver_at: None,
                    })
                    .collect();
                let applied = broker.submit(Command::Produce { station: CRASH_STATION.into(), messages }).await?;
                let Outcome::Produced(results) = applied.outcome else { anyhow::bail!("unexpected outcome") };
                let mut out = std::io::stdout().lock();
                for (id, result) in ids.iter().zip(results) {
                    let produced = result.map_err(|e| anyhow::anyhow!("item refused: {e}"))?;
                    writeln!(out, "{} {id}", produced.offset)?;
                }
                out.flush()?;
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        }));
    }
    for w in writers {
        w.await??;
    }
    Ok(())
}
