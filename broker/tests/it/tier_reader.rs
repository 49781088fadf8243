//! `tier::TierReader` against a real S3-compatible server (`s3s-fs`, see the test kit): a
//! segment written by `SegmentedLog`, built into an object and uploaded, reads back byte for
//! byte through caches of every size, survives the server's absence for what it cached, and
//! reports damage as `Corrupt` without panicking.

use std::path::Path;
use std::sync::Once;

use bytes::Bytes;
use depot_broker::log::{LogOptions, SegmentedLog, Verify};
use depot_broker::station::TieredSegment;
use depot_broker::tier::reader::BLOCK_BYTES;
use depot_broker::tier::{object, Bucket, TierOptions, TierReadError, TierReader, DEFAULT_PART_BYTES};
use depot_tests::s3::{S3Server, ACCESS_KEY, REGION, SECRET_KEY};

const BUCKET: &str = "depot-reader";
const FIRST: u64 = 100;
const RECORDS: u64 = 60;
const LAST: u64 = FIRST + RECORDS - 1;
/// The offset of a record larger than a block.
const LARGE: u64 = FIRST + 20;
const MIB: u64 = 1 << 20;

/// The SDK's default chain reads credentials from the environment.
fn credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
}

/// Message `offset`: sizes from 0 bytes to 1.5 MiB, contents that differ per offset.
fn message(offset: u64) -> Vec<u8> {
    let len =
        if offset == LARGE { 3 * MIB as usize / 2 } else { [0, 1, 100, 5_000, 70_000, 300_000][offset as usize % 6] };
    let mut x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Fixture {
    server: S3Server,
    bucket: Bucket,
    segment: TieredSegment,
    object: Vec<u8>,
    /// What `SegmentedLog::read` answered, by offset from FIRST.
    expected: Vec<Bytes>,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    credentials();
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        segment_bytes: 64 * MIB,
        verify: Verify::Full,
        preallocate: true,
        after_clean_shutdown: false,
        sync_on_open: false,
    };
    let (mut log, _) = SegmentedLog::open(&dir.path().join("log"), opts).unwrap();
    log.reset(FIRST).unwrap();
    for offset in FIRST..=LAST {
        log.append(offset, &message(offset)).unwrap();
    }
    log.seal_active().unwrap();
    let expected: Vec<Bytes> = (FIRST..=LAST).map(|o| log.read(o).unwrap().unwrap()).collect();
    for (i, e) in expected.iter().enumerate() {
        assert_eq!(e.as_ref(), message(FIRST + i as u64).as_slice());
    }
    let segments = log.segments();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let header = object::Header {
        format: object::FORMAT,
        cluster_id: "c1".into(),
        station: "replay".into(),
        station_id: 7,
        first_offset: FIRST,
        last_offset: LAST,
        records: RECORDS,
    };
    let object = object::build(&header, &segments[0].path).unwrap().to_vec();
    assert!(object.len() as u64 > 5 * MIB, "{} bytes", object.len());

    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let bucket = Bucket::new(TierOptions {
        bucket: BUCKET.into(),
        endpoint: Some(server.endpoint()),
        region: Some(REGION.into()),
        prefix: "tiered/".into(),
        path_style: true,
        cache_bytes: 0,
        part_bytes: DEFAULT_PART_BYTES,
    })
    .await;
    let key = bucket.key(&object::name("c1", 7, FIRST, LAST));
    bucket.put(&key, object.clone()).await.unwrap();
    let segment =
        TieredSegment { first_offset: FIRST, last_offset: LAST, bytes: object.len() as u64, key, tiered_at: 0 };
    Fixture { server, bucket, segment, object, expected, dir }
}

impl Fixture {
    fn reader(&self, name: &str, cache_bytes: u64) -> TierReader {
        TierReader::new(self.bucket.clone(), self.dir.path().join(name), cache_bytes).unwrap()
    }

    fn expected(&self, offsets: &[u64]) -> Vec<Bytes> {
        offsets.iter().map(|o| self.expected[(o - FIRST) as usize].clone()).collect()
    }

    /// Reads every offset singly, in groups of 7 and all at once, checking each answer and,
    /// after each read, that the cache's files stay within `budget`.
    async fn read_everything(&self, reader: &TierReader, cache: &Path, budget: u64) {
        let all: Vec<u64> = (FIRST..=LAST).collect();
        let mut reads: Vec<&[u64]> = all.chunks(1).collect();
        reads.extend(all.chunks(7));
        reads.push(&all);
        for offsets in reads {
            let got = reader.read(&self.segment, offsets).await.unwrap_or_else(|e| panic!("{offsets:?}: {e}"));
            assert!(got == self.expected(offsets), "offsets {offsets:?} read back different bytes");
            let on_disk = dir_bytes(cache);
            assert!(on_disk <= budget, "{on_disk} bytes cached, budget {budget}");
            assert!(reader.stats().bytes <= budget, "{:?}", reader.stats());
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

fn stop(server: &mut S3Server) {
    tokio::task::block_in_place(|| server.stop());
}

fn restart(server: &mut S3Server) {
    tokio::task::block_in_place(|| server.restart());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_record_reads_back_byte_identical_and_a_second_read_hits_the_cache() {
    let f = fixture().await;
    let reader = f.reader("cache", 64 * MIB);
    f.read_everything(&reader, &f.dir.path().join("cache"), 64 * MIB).await;
    let first = reader.stats();
    // The layout once (64 KiB), and each block once.
    assert!(first.fetched_bytes <= f.object.len() as u64 + (64 << 10), "{first:?}");
    assert_eq!(first.blocks, (f.object.len() as u64).div_ceil(BLOCK_BYTES), "{first:?}");
    assert_eq!(first.bytes, f.object.len() as u64, "{first:?}");

    let all: Vec<u64> = (FIRST..=LAST).collect();
    assert!(reader.read(&f.segment, &all).await.unwrap() == f.expected(&all));
    let second = reader.stats();
    assert!(second.hits > first.hits, "{first:?} {second:?}");
    assert_eq!((second.misses, second.fetched_bytes), (first.misses, first.fetched_bytes), "{second:?}");

    // Many reads at once, from clones of the reader.
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let (reader, segment) = (reader.clone(), f.segment.clone());
            tokio::spawn(async move {
                let offsets: Vec<u64> = (FIRST + t..=LAST).step_by(3).collect();
                (offsets.clone(), reader.read(&segment, &offsets).await.unwrap())
            })
        })
        .collect();
    for task in tasks {
        let (offsets, got) = task.await.unwrap();
        assert!(got == f.expected(&offsets));
    }
    // A new reader starts from an empty directory.
    std::fs::write(f.dir.path().join("cache").join("leftover.blk"), b"x").unwrap();
    let again = f.reader("cache", MIB);
    assert_eq!(dir_bytes(&f.dir.path().join("cache")), 0);
    assert_eq!(again.stats(), Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caches_smaller_than_the_object_read_everything_within_their_budget() {
    let f = fixture().await;
    for (name, budget) in
        [("none", 0), ("half-block", BLOCK_BYTES / 2), ("one-block", BLOCK_BYTES), ("two-blocks", 2 * BLOCK_BYTES)]
    {
        let reader = f.reader(name, budget);
        let dir = f.dir.path().join(name);
        f.read_everything(&reader, &dir, budget).await;
        // Concurrent reads of scattered offsets.
        let tasks: Vec<_> = (0..6u64)
            .map(|t| {
                let (reader, segment) = (reader.clone(), f.segment.clone());
                tokio::spawn(async move {
                    let offsets: Vec<u64> = (FIRST + t..=LAST).step_by(5).collect();
                    (offsets.clone(), reader.read(&segment, &offsets).await.unwrap())
                })
            })
            .collect();
        for task in tasks {
            let (offsets, got) = task.await.unwrap();
            assert!(got == f.expected(&offsets), "{name}");
        }
        assert!(dir_bytes(&dir) <= budget, "{name}");
        let stats = reader.stats();
        assert!(stats.bytes <= budget && stats.misses > 0, "{name}: {stats:?}");
        if budget == 0 {
            assert_eq!(stats.blocks, 0, "{stats:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_bucket_cached_blocks_still_read_and_the_rest_is_unavailable_until_it_returns() {
    let mut f = fixture().await;
    let reader = f.reader("cache", 64 * MIB);
    // The object's last block (no read-ahead past it, nor before a read that is not sequential).
    assert!(reader.read(&f.segment, &[LAST - 1, LAST]).await.unwrap() == f.expected(&[LAST - 1, LAST]));
    stop(&mut f.server);

    assert!(reader.read(&f.segment, &[LAST]).await.unwrap() == f.expected(&[LAST]));
    match reader.read(&f.segment, &[FIRST]).await {
        Err(TierReadError::Unavailable(_)) => {}
        other => panic!("{other:?}"),
    }
    // A reader that never saw the object cannot read its layout either.
    match f.reader("fresh", MIB).read(&f.segment, &[FIRST]).await {
        Err(TierReadError::Unavailable(_)) => {}
        other => panic!("{other:?}"),
    }

    restart(&mut f.server);
    assert!(reader.read(&f.segment, &[FIRST]).await.unwrap() == f.expected(&[FIRST]));
    let all: Vec<u64> = (FIRST..=LAST).collect();
    assert!(reader.read(&f.segment, &all).await.unwrap() == f.expected(&all));
}

fn corrupt<T: std::fmt::Debug>(what: &str, answer: Result<T, TierReadError>) -> String {
    match answer {
        Err(TierReadError::Corrupt { detail, .. }) => detail,
        other => panic!("{what}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_and_damaged_objects_are_corrupt() {
    let f = fixture().await;
    let reader = f.reader("cache", 64 * MIB);
    let object_file = f.server.object_path(BUCKET, &f.segment.key);

    // Missing; an offset it does not hold; a size the object does not have.
    let missing = TieredSegment { key: "tiered/nothing-here.dseg".into(), ..f.segment.clone() };
    corrupt("missing", reader.read(&missing, &[FIRST]).await);
    corrupt("offset", reader.read(&f.segment, &[LAST + 1]).await);
    let longer = TieredSegment { bytes: f.segment.bytes + 10 * MIB, ..f.segment.clone() };
    corrupt("longer", f.reader("longer", MIB).read(&longer, &[LAST]).await);
    let shorter = TieredSegment { bytes: f.segment.bytes - 1, ..f.segment.clone() };
    corrupt("shorter", f.reader("shorter", MIB).read(&shorter, &[FIRST]).await);

    // Cut short after its layout was read: a block past the end is answered 416. (No cache,
    // so no block was read ahead or kept.)
    let uncached = f.reader("uncached", 0);
    assert!(uncached.read(&f.segment, &[LAST]).await.unwrap() == f.expected(&[LAST]));
    std::fs::write(&object_file, &f.object[..2 * MIB as usize]).unwrap();
    let detail = corrupt("cut short", uncached.read(&f.segment, &[LAST]).await);
    assert!(detail.contains("missing"), "{detail}");

    // A flipped byte in the last record: that record is refused, the others read.
    let mut damaged = f.object.clone();
    *damaged.last_mut().unwrap() ^= 0x40;
    std::fs::write(&object_file, &damaged).unwrap();
    let fresh = f.reader("damaged-record", 64 * MIB);
    let detail = corrupt("record", fresh.read(&f.segment, &[LAST]).await);
    assert!(detail.contains("CRC32C"), "{detail}");
    assert!(fresh.read(&f.segment, &[FIRST]).await.unwrap() == f.expected(&[FIRST]));

    // A flipped byte in the index (right after the header).
    let mut damaged = f.object.clone();
    let index = object::header_end(&damaged).unwrap() as usize;
    damaged[index + 1] ^= 1;
    std::fs::write(&object_file, &damaged).unwrap();
    let detail = corrupt("index", f.reader("damaged-index", MIB).read(&f.segment, &[FIRST]).await);
    assert!(detail.contains("index"), "{detail}");

    // Garbage, and hostile headers: a huge header length, a header lying about sizes.
    let mut hostile: Vec<Vec<u8>> = vec![vec![0x5a; f.object.len()], b"DEPOTSEG\xff\xff\xff\x7f".to_vec()];
    let json = br#"{"format":2,"cluster_id":"c1","station":"s","station_id":7,"first_offset":100,"last_offset":159,"records":60,"index_bytes":240,"index_crc32c":0,"segment_bytes":18446744073709551615,"segment_crc32c":0}"#;
    let mut lying = b"DEPOTSEG".to_vec();
    lying.extend_from_slice(&(json.len() as u32).to_le_bytes());
    lying.extend_from_slice(json);
    hostile.push(lying);
    for (i, bytes) in hostile.into_iter().enumerate() {
        let key = f.bucket.key(&format!("hostile-{i}.dseg"));
        let size = bytes.len() as u64;
        f.bucket.put(&key, bytes).await.unwrap();
        let segment = TieredSegment { key, bytes: size, ..f.segment.clone() };
        corrupt("hostile", reader.read(&segment, &[FIRST, LAST]).await);
    }
}
