//! Reads records of tiered objects back from the bucket (docs/tiering.md, "Object layout").
//!
//! An object's layout (its header and index) is read once with a ranged GET of its first
//! 64 KiB (and of the rest of the index when it is longer) and kept for the last
//! [`LAYOUTS`] objects. Data is fetched in blocks of [`BLOCK_BYTES`] of the object, aligned
//! to it, and each block is kept as a file in the cache directory, least recently used out
//! first, so that the files never hold more than the cache's budget: room is reserved
//! before a block is written, and an evicted block's file is deleted before its room is
//! given to another. Every record's CRC32C is checked on every read.
//!
//! The last [`HOT_BLOCKS`] blocks read are kept in memory as well (16 MiB; fewer with a budget
//! under that, none without a cache). Concurrent reads of a missing block share one GET (run in a task of its own, so a
//! cancelled read does not cancel the others'). A read that continues where the last read of
//! the same object stopped also starts fetching the next blocks (up to [`READ_AHEAD`] per
//! object at a time), so a replay does not wait for each block in turn.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::{StreamExt, TryStreamExt};
use hashlink::LruCache;
use sha2::{Digest, Sha256};

use super::bucket::{Bucket, GetError};
use super::object;
use crate::log::format::RECORD_HEADER_LEN;
use crate::station::TieredSegment;

/// The unit of fetching and caching: this many bytes of an object, aligned to it.
pub const BLOCK_BYTES: u64 = 1 << 20;
/// The first GET of an object's layout.
const FIRST_GET: u64 = 64 << 10;
/// How many objects' layouts are kept in memory.
const LAYOUTS: usize = 64;
/// A longer JSON header is refused (real ones are a few hundred bytes).
const MAX_HEADER: u64 = 1 << 20;
/// Blocks of one object read ahead at once, at most.
const READ_AHEAD: u64 = 8;
/// Blocks one read fetches at once.
const FETCHES_PER_READ: usize = 4;
/// Blocks kept in memory as well, most recently used: consumers replaying a station read the
/// same block many times in a row (a fetch of 100 messages of 1 KiB needs a tenth of one),
/// and reading its whole file each time cost more than the rest of the fetch.
const HOT_BLOCKS: usize = 16;
/// What cache files are named with; `new` deletes files of this kind (and no other).
const BLOCK_EXT: &str = "blk";
const TMP_EXT: &str = "blk-tmp";

#[derive(Clone, Debug, thiserror::Error)]
pub enum TierReadError {
    /// The bucket did not answer, answered an error (5xx, timeout, connection refused...): retry later.
    #[error("tiered data unavailable: {0}")]
    Unavailable(String),
    /// The object is missing (404) or does not decode / fails its checksums / lacks an offset.
    #[error("tiered object {key} is damaged: {detail}")]
    Corrupt { key: String, detail: String },
}

/// The cache's figures since the reader was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierCacheStats {
    /// Bytes of blocks in the cache directory (and being written to it).
    pub bytes: u64,
    /// Blocks in the cache directory.
    pub blocks: u64,
    /// Blocks a read needed that were cached or already being fetched.
    pub hits: u64,
    /// Blocks fetched from the bucket (by a read or a read-ahead).
    pub misses: u64,
    /// Bytes received from the bucket: blocks and layouts.
    pub fetched_bytes: u64,
}

/// Reads records of tiered objects; cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct TierReader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TierReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierReader")
            .field("dir", &self.inner.dir)
            .field("cache_bytes", &self.inner.cache_bytes)
            .finish_non_exhaustive()
    }
}

const _: fn() = || {
    fn shared_across_tasks<T: Send + Sync + 'static>() {}
    shared_across_tasks::<TierReader>();
};

struct Inner {
    bucket: Bucket,
    dir: PathBuf,
    cache_bytes: u64,
    state: Mutex<State>,
}

/// What an object's header and index say, checked against its catalog entry.
struct Layout {
    /// The object's size.
    size: u64,
    first: u64,
    last: u64,
    /// Where the segment file starts in the object.
    segment_start: u64,
    segment_bytes: u64,
    index: Vec<u32>,
}

/// An object's key and a block number.
type BlockId = (Arc<str>, u64);
type Fetch = Shared<BoxFuture<'static, Result<Bytes, TierReadError>>>;

struct State {
    layouts: LruCache<Arc<str>, Arc<Layout>>,
    /// The blocks whose files are in the directory: their lengths, least recently used first.
    blocks: LruCache<BlockId, u64>,
    /// The lengths in `blocks` plus the room reserved for blocks being written.
    bytes: u64,
    /// Blocks being fetched.
    inflight: HashMap<BlockId, Fetch>,
    /// The last blocks read, in memory ([`HOT_BLOCKS`]).
    hot: LruCache<BlockId, Bytes>,
    /// The last block a read of each object reached, for read-ahead.
    last_block: LruCache<Arc<str>, u64>,
    /// Objects with read-ahead fetches in flight: how many.
    reading_ahead: HashMap<Arc<str>, u64>,
    stats: TierCacheStats,
}

/// Blocks kept in memory for a cache of `cache_bytes`: [`HOT_BLOCKS`], or as many as the
/// budget holds when it is smaller (none without a cache).
fn hot_blocks(cache_bytes: u64) -> usize {
    usize::try_from(cache_bytes / BLOCK_BYTES).unwrap_or(usize::MAX).min(HOT_BLOCKS)
}

fn is_ours(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == BLOCK_EXT || e == TMP_EXT)
}

impl TierReader {
    /// `cache_dir` is emptied of cache files (created if missing) at start; the cache never
    /// holds more than `cache_bytes` of object data on disk (0: nothing is cached).
    pub fn new(bucket: Bucket, cache_dir: PathBuf, cache_bytes: u64) -> std::io::Result<TierReader> {
        std::fs::create_dir_all(&cache_dir)?;
        for entry in std::fs::read_dir(&cache_dir)? {
            let path = entry?.path();
            if is_ours(&path) {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        let state = State {
            layouts: LruCache::new(LAYOUTS),
            blocks: LruCache::new_unbounded(),
            bytes: 0,
            inflight: HashMap::new(),
            hot: LruCache::new(hot_blocks(cache_bytes).max(1)),
            last_block: LruCache::new(LAYOUTS),
            reading_ahead: HashMap::new(),
            stats: TierCacheStats::default(),
        };
        Ok(TierReader { inner: Arc::new(Inner { bucket, dir: cache_dir, cache_bytes, state: Mutex::new(state) }) })
    }

    pub fn stats(&self) -> TierCacheStats {
        let st = self.inner.lock();
        TierCacheStats { bytes: st.bytes, blocks: st.blocks.len() as u64, ..st.stats }
    }

    /// The payloads (as `SegmentedLog::read` returns them: the encoded message after the
    /// record header) of the records at `offsets` (each within
    /// `segment.first_offset..=segment.last_offset`) of the object `segment.key` (a full key),
    /// whose size is `segment.bytes`. Every record's CRC32C is checked.
    pub async fn read(&self, segment: &TieredSegment, offsets: &[u64]) -> Result<Vec<Bytes>, TierReadError> {
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        let key: Arc<str> = Arc::from(segment.key.as_str());
        let corrupt = |detail: String| TierReadError::Corrupt { key: segment.key.clone(), detail };
        let layout = self.inner.layout(&key, segment).await?;
        let mut spans = Vec::with_capacity(offsets.len());
        let mut needed = BTreeSet::new();
        for &offset in offsets {
            if offset < layout.first || offset > layout.last {
                return Err(corrupt(format!("no offset {offset} (it holds {}..={})", layout.first, layout.last)));
            }
            let i = usize::try_from(offset - layout.first).map_err(|_| corrupt("offset".to_owned()))?;
            let (start, end) = object::record_span(&layout.index, layout.segment_bytes, i)
                .ok_or_else(|| corrupt(format!("no index entry for offset {offset}")))?;
            let (start, end) = (layout.segment_start + start, layout.segment_start + end);
            // The index is checked ordered, each record at least a header long, within the object.
            needed.extend(start / BLOCK_BYTES..=(end - 1) / BLOCK_BYTES);
            spans.push((offset, start, end));
        }
        let (first_block, last_block) = (*needed.first().unwrap_or(&0), *needed.last().unwrap_or(&0));
        // Before this read's own fetches, so that both run at once.
        self.inner.read_ahead(&key, &layout, first_block, last_block);
        let blocks: HashMap<u64, Bytes> = futures_util::stream::iter(needed)
            .map(|b| {
                let (inner, key, layout) = (&self.inner, &key, &layout);
                async move { inner.block(key, layout, b).await.map(|data| (b, data)) }
            })
            .buffered(FETCHES_PER_READ)
            .try_collect()
            .await?;
        let mut out = Vec::with_capacity(spans.len());
        let short = |b: u64| corrupt(format!("block {b} is short"));
        for (offset, start, end) in spans {
            let (b, from) = (start / BLOCK_BYTES, (start % BLOCK_BYTES) as usize);
            let record = if (end - 1) / BLOCK_BYTES == b {
                // Within one block (nearly every record): a view of it, not a copy.
                let data = blocks.get(&b).ok_or_else(|| short(b))?;
                let to = from + (end - start) as usize;
                if to > data.len() {
                    return Err(short(b));
                }
                data.slice(from..to)
            } else {
                let mut record = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
                let mut pos = start;
                while pos < end {
                    let b = pos / BLOCK_BYTES;
                    let upto = end.min((b + 1) * BLOCK_BYTES);
                    let from = (pos - b * BLOCK_BYTES) as usize;
                    let bytes = blocks
                        .get(&b)
                        .and_then(|data| data.get(from..from + (upto - pos) as usize))
                        .ok_or_else(|| short(b))?;
                    record.extend_from_slice(bytes);
                    pos = upto;
                }
                Bytes::from(record)
            };
            object::check_record(&record, offset).map_err(corrupt)?;
            out.push(record.slice(RECORD_HEADER_LEN..));
        }
        Ok(out)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, (key, block): &BlockId) -> PathBuf {
        let digest = Sha256::digest(key.as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}-{block}.{BLOCK_EXT}"))
    }

    /// Bytes `range` of `key`, exactly.
    async fn get(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, TierReadError> {
        let corrupt = |detail: String| TierReadError::Corrupt { key: key.to_owned(), detail };
        let data = self.bucket.read_range(key, range.clone()).await.map_err(|e| match e {
            GetError::Missing(e) => corrupt(format!("missing: {e}")),
            GetError::Failed(e) => TierReadError::Unavailable(e.to_string()),
        })?;
        self.lock().stats.fetched_bytes += data.len() as u64;
        if data.len() as u64 != range.end - range.start {
            return Err(corrupt(format!(
                "bytes {}..{} answered with {} bytes (the object is shorter than catalogued)",
                range.start,
                range.end,
                data.len()
            )));
        }
        Ok(data)
    }

    async fn layout(&self, key: &Arc<str>, segment: &TieredSegment) -> Result<Arc<Layout>, TierReadError> {
        if let Some(layout) = self.lock().layouts.get(&**key) {
            return Ok(layout.clone());
        }
        let corrupt = |detail: String| TierReadError::Corrupt { key: segment.key.clone(), detail };
        let size = segment.bytes;
        let mut head = self.get(key, 0..size.min(FIRST_GET)).await?;
        let header_end = object::header_end(&head).map_err(corrupt)?;
        if header_end > MAX_HEADER || header_end > size {
            return Err(corrupt(format!("a header ending at byte {header_end}")));
        }
        if header_end > head.len() as u64 {
            head = self.get(key, 0..header_end).await?;
        }
        let written =
            object::decode_header(&head[object::PREFIX_LEN as usize..header_end as usize]).map_err(corrupt)?;
        let h = &written.header;
        if (h.first_offset, h.last_offset) != (segment.first_offset, segment.last_offset) {
            return Err(corrupt(format!(
                "it holds offsets {}..={}, catalogued as {}..={}",
                h.first_offset, h.last_offset, segment.first_offset, segment.last_offset
            )));
        }
        let segment_start = header_end.saturating_add(written.index_bytes);
        if segment_start.checked_add(written.segment_bytes) != Some(size) {
            return Err(corrupt(format!(
                "a header, an index of {} and a segment of {} bytes do not make {size} bytes",
                written.index_bytes, written.segment_bytes
            )));
        }
        let index = if segment_start <= head.len() as u64 {
            object::decode_index(&written, &head[header_end as usize..segment_start as usize])
        } else {
            object::decode_index(&written, &self.get(key, header_end..segment_start).await?)
        }
        .map_err(corrupt)?;
        let layout = Arc::new(Layout {
            size,
            first: h.first_offset,
            last: h.last_offset,
            segment_start,
            segment_bytes: written.segment_bytes,
            index,
        });
        self.lock().layouts.insert(key.clone(), layout.clone());
        Ok(layout)
    }

    /// Block `b` of the object: from the cache directory, or fetched (and cached).
    async fn block(self: &Arc<Self>, key: &Arc<str>, layout: &Layout, b: u64) -> Result<Bytes, TierReadError> {
        let id: BlockId = (key.clone(), b);
        let range = b * BLOCK_BYTES..layout.size.min((b + 1) * BLOCK_BYTES);
        let len = range.end - range.start;
        for _ in 0..3 {
            let cached = {
                let mut st = self.lock();
                st.stats.hits += 1;
                if let Some(data) = st.hot.get(&id) {
                    return Ok(data.clone());
                }
                if st.blocks.get(&id).is_some() {
                    None
                } else if let Some(fetch) = st.inflight.get(&id) {
                    Some(fetch.clone())
                } else {
                    st.stats.hits -= 1;
                    st.stats.misses += 1;
                    Some(self.start_fetch(&mut st, id.clone(), range.clone()))
                }
            };
            if let Some(fetch) = cached {
                let data = fetch.await?;
                self.keep_hot(id, &data);
                return Ok(data);
            }
            let path = self.path(&id);
            match tokio::fs::read(&path).await {
                Ok(data) if data.len() as u64 == len => {
                    let data = Bytes::from(data);
                    self.keep_hot(id, &data);
                    return Ok(data);
                }
                // Evicted meanwhile, or damaged on disk: forget it and look again.
                _ => {
                    let mut st = self.lock();
                    if let Some(had) = st.blocks.remove(&id) {
                        st.bytes -= had;
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        // The block keeps vanishing (another process in the directory?): read it uncached.
        self.get(key, range).await.map(Bytes::from)
    }

    fn keep_hot(&self, id: BlockId, data: &Bytes) {
        if hot_blocks(self.cache_bytes) > 0 {
            self.lock().hot.insert(id, data.clone());
        }
    }

    /// Starts fetching a block into the cache, in a task of its own; the caller holds the
    /// lock and `id` is neither cached nor being fetched.
    fn start_fetch(self: &Arc<Self>, st: &mut State, id: BlockId, range: std::ops::Range<u64>) -> Fetch {
        let inner = self.clone();
        let task_id = id.clone();
        let task = tokio::spawn(async move {
            let fetched = inner.get(&task_id.0, range).await.map(Bytes::from);
            if let Ok(data) = &fetched {
                inner.store(&task_id, data).await;
            }
            inner.lock().inflight.remove(&task_id);
            fetched
        });
        let (inner, task_id) = (self.clone(), id.clone());
        let fetch = async move {
            task.await.unwrap_or_else(|e| {
                // Cancelled (the runtime is shutting down) or panicked: the task did not clear it.
                inner.lock().inflight.remove(&task_id);
                Err(TierReadError::Unavailable(format!("fetching a block failed: {e}")))
            })
        }
        .boxed()
        .shared();
        st.inflight.insert(id, fetch.clone());
        fetch
    }

    /// Writes a fetched block to the cache directory if there is (or can be made) room.
    async fn store(&self, id: &BlockId, data: &Bytes) {
        let len = data.len() as u64;
        {
            let mut st = self.lock();
            while st.bytes + len > self.cache_bytes {
                let Some((victim, had)) = st.blocks.remove_lru() else { break };
                // Deleted before the room is reused, so the files never exceed the budget.
                if let Err(e) = std::fs::remove_file(self.path(&victim)) {
                    tracing::warn!(error = %e, "deleting a cached block of tiered data failed");
                }
                st.bytes -= had;
            }
            if st.bytes + len > self.cache_bytes {
                return;
            }
            st.bytes += len;
        }
        let path = self.path(id);
        let tmp = path.with_extension(TMP_EXT);
        let body = data.clone();
        let written = tokio::task::spawn_blocking(move || {
            std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, &path)).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let mut st = self.lock();
        match written {
            Ok(()) => {
                if let Some(had) = st.blocks.insert(id.clone(), len) {
                    st.bytes -= had;
                }
            }
            Err(e) => {
                st.bytes -= len;
                drop(st);
                tracing::warn!(error = %e, dir = %self.dir.display(), "caching a block of tiered data failed");
            }
        }
    }

    /// After a read of blocks `first..=last` of an object: if it continues the previous read
    /// (or starts at the object's beginning), starts fetching the blocks after, so that up to
    /// [`READ_AHEAD`] of this object's blocks (fewer in a small cache) are being fetched.
    fn read_ahead(self: &Arc<Self>, key: &Arc<str>, layout: &Layout, first: u64, last: u64) {
        let mut st = self.lock();
        let sequential = first == 0 || st.last_block.get(&**key).is_some_and(|&l| first <= l + 1 && last >= l);
        st.last_block.insert(key.clone(), last);
        // The cache must hold the block being read as well as those read ahead.
        let window = READ_AHEAD.min((self.cache_bytes / BLOCK_BYTES).saturating_sub(1));
        if !sequential || window == 0 {
            return;
        }
        for next in last + 1..=last + window {
            let in_flight = st.reading_ahead.get(&**key).copied().unwrap_or(0);
            if in_flight >= window || next * BLOCK_BYTES >= layout.size {
                return;
            }
            let id: BlockId = (key.clone(), next);
            if st.blocks.contains_key(&id) || st.inflight.contains_key(&id) {
                continue;
            }
            st.stats.misses += 1;
            let fetch = self.start_fetch(&mut st, id, next * BLOCK_BYTES..layout.size.min((next + 1) * BLOCK_BYTES));
            *st.reading_ahead.entry(key.clone()).or_insert(0) += 1;
            let (inner, key) = (self.clone(), key.clone());
            tokio::spawn(async move {
                // A failure is the next read's to report.
                let _ = fetch.await;
                let mut st = inner.lock();
                if let Some(n) = st.reading_ahead.get_mut(&*key) {
                    *n -= 1;
                    if *n == 0 {
                        st.reading_ahead.remove(&*key);
                    }
                }
            });
        }
    }
}
