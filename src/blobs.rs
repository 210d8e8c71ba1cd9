//! The content-addressed blob store over `object_store` (DESIGN.md §1).
//!
//! Keys are `sha256/ab/cd/<64 hex>`. Uploads are spooled to a temporary file in the data
//! directory while they are hashed, so the key is known before anything reaches the store,
//! the same bytes are stored once, and memory stays flat whatever the size. Every read is
//! re-hashed; bytes that do not match their key are never served whole.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use crate::domain::ContentHash;

/// Objects up to this size are read and verified whole before the first byte is sent, so a
/// corrupt one is refused with a clean error. Larger ones are verified as they stream.
pub const VERIFY_BEFORE_SEND_LIMIT: u64 = 8 * 1024 * 1024;
/// Part size for multipart uploads (S3 wants at least 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// How many bytes of the start of an upload are kept to sniff its media type.
pub const SNIFF_BYTES: usize = 8192;

/// A blob-store failure.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The upload exceeds the configured limit.
    #[error("upload exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// No object under the key.
    #[error("blob {0} is missing from the store")]
    Missing(ContentHash),
    /// The object's bytes do not hash to its key.
    #[error("blob {0} failed its integrity check")]
    Corrupt(ContentHash),
    /// The blob URL could not be understood.
    #[error(
        "unsupported blob URL {0:?}: use a directory path, file:///dir, s3://bucket/prefix or memory://"
    )]
    UnsupportedUrl(String),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
    /// Local file I/O failed (spooling).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The blob store.
#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Root directory when the store is a local directory: writes there are renamed into
    /// place and fsynced.
    local_root: Option<PathBuf>,
    spool_dir: PathBuf,
}

/// A blob that was written (or found already present).
#[derive(Clone, Debug)]
pub struct StoredBlob {
    /// Its hash.
    pub hash: ContentHash,
    /// Its size in bytes.
    pub size: u64,
    /// True when the same bytes were already stored.
    pub deduplicated: bool,
    /// The hashes of its [`CHUNK`]-byte pieces, recorded with it so a range is checked by
    /// reading only the pieces it covers.
    pub chunks: ChunkHashes,
}

/// Size of the pieces whose hashes are recorded at upload (the last one may be shorter).
pub const CHUNK: u64 = 1024 * 1024;

/// The SHA-256 of each [`CHUNK`]-byte piece of a blob, in order, as concatenated hex.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkHashes(Arc<str>);

impl ChunkHashes {
    /// From the stored text; `None` if it is not whole hashes of hex.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len().is_multiple_of(64) && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(text.into()))
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How many pieces.
    pub fn len(&self) -> usize {
        self.0.len() / 64
    }

    /// No pieces (an empty blob).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The hex hash of piece `i`.
    fn piece(&self, i: usize) -> Option<&str> {
        self.0.get(i * 64..(i + 1) * 64)
    }

    /// The hashes of `bytes`, cut into pieces.
    pub fn of(bytes: &[u8]) -> Self {
        let mut text = String::with_capacity(bytes.len().div_ceil(CHUNK as usize) * 64);
        for piece in bytes.chunks(CHUNK as usize) {
            text.push_str(&hex::encode(Sha256::digest(piece)));
        }
        Self(text.into())
    }
}

/// An object found by a listing.
#[derive(Clone, Copy, Debug)]
pub struct ListedBlob {
    /// Its hash, from its key.
    pub hash: ContentHash,
    /// Its size.
    pub size: u64,
    /// When it was last written, in milliseconds since the epoch.
    pub modified_ms: i64,
}

impl BlobStore {
    /// Opens the store named by `url`; `None` means `<data_dir>/blobs`.
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Self, BlobError> {
        let spool_dir = data_dir.join("tmp");
        std::fs::create_dir_all(&spool_dir)?;
        let (store, local_root): (Arc<dyn ObjectStore>, _) = match url {
            None => Self::local(&data_dir.join("blobs"))?,
            Some(u) if u.starts_with("memory:") => (Arc::new(InMemory::new()), None),
            Some(u) if u.starts_with("s3://") => {
                let parsed = url::Url::parse(u).map_err(|_| BlobError::UnsupportedUrl(u.into()))?;
                let bucket = parsed
                    .host_str()
                    .ok_or_else(|| BlobError::UnsupportedUrl(u.into()))?;
                // Endpoint, region, credentials and AWS_ALLOW_HTTP come from the usual AWS_*
                // variables, so any S3-compatible store works.
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()?;
                let prefix = parsed.path().trim_matches('/');
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix))
                };
                (store, None)
            }
            Some(u) if u.starts_with("file://") => {
                let parsed = url::Url::parse(u).map_err(|_| BlobError::UnsupportedUrl(u.into()))?;
                let path = parsed
                    .to_file_path()
                    .map_err(|_| BlobError::UnsupportedUrl(u.into()))?;
                Self::local(&path)?
            }
            Some(u) if !u.contains("://") => Self::local(Path::new(u))?,
            Some(u) => return Err(BlobError::UnsupportedUrl(u.into())),
        };
        Ok(Self {
            store,
            local_root,
            spool_dir,
        })
    }

    fn local(dir: &Path) -> Result<(Arc<dyn ObjectStore>, Option<PathBuf>), BlobError> {
        std::fs::create_dir_all(dir)?;
        let root = dir.canonicalize()?;
        let fs = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
        Ok((Arc::new(fs), Some(root)))
    }

    /// The underlying object store, for maintenance tools and tests.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The directory where uploads are spooled.
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// Starts spooling an upload of at most `limit` bytes.
    pub async fn spool(&self, limit: u64) -> Result<Spool, BlobError> {
        let path = self
            .spool_dir
            .join(format!("{}.part", uuid::Uuid::now_v7().simple()));
        let file = tokio::fs::File::create(&path).await?;
        Ok(Spool {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            guard: TempFile(path),
            hasher: Sha256::new(),
            piece: Sha256::new(),
            piece_len: 0,
            pieces: String::new(),
            size: 0,
            head: Vec::with_capacity(SNIFF_BYTES),
            limit,
        })
    }

    /// Moves a spooled upload into the store under its hash. Idempotent: bytes already
    /// stored are not written again.
    /// With `force`, writes even when an object is already present (used when garbage
    /// collection removed it after it was first found).
    #[tracing::instrument(skip(self, spooled), fields(hash = %spooled.hash, size = spooled.size))]
    pub async fn put(&self, spooled: &Spooled, force: bool) -> Result<StoredBlob, BlobError> {
        let key = ObjectPath::from(spooled.hash.object_key());
        let stored = StoredBlob {
            hash: spooled.hash,
            size: spooled.size,
            deduplicated: true,
            chunks: spooled.chunks.clone(),
        };
        if !force {
            match self.store.head(&key).await {
                Ok(meta) if meta.size == spooled.size => return Ok(stored),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(root) = &self.local_root {
            let target = root.join(spooled.hash.object_key());
            if rename_durably(&spooled.guard.0, &target).await.is_ok() {
                return Ok(StoredBlob {
                    deduplicated: false,
                    ..stored
                });
            }
            // A spool directory on another filesystem cannot be renamed across: copy instead.
        }
        if spooled.size <= PART_SIZE as u64 {
            let bytes = tokio::fs::read(&spooled.guard.0).await?;
            self.store.put(&key, PutPayload::from(bytes)).await?;
        } else {
            let upload = self.store.put_multipart(&key).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut file = tokio::fs::File::open(&spooled.guard.0).await?;
            let mut buf = vec![0u8; 1024 * 1024];
            loop {
                let n = match file.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(e.into());
                    }
                };
                if n == 0 {
                    break;
                }
                if let Err(e) = writer.wait_for_capacity(2).await {
                    let _ = writer.abort().await;
                    return Err(e.into());
                }
                writer.write(&buf[..n]);
            }
            writer.finish().await?;
        }
        if let Some(root) = &self.local_root {
            sync_path(&root.join(spooled.hash.object_key())).await?;
        }
        Ok(StoredBlob {
            deduplicated: false,
            ..stored
        })
    }

    /// Size of a stored blob.
    pub async fn size(&self, hash: &ContentHash) -> Result<u64, BlobError> {
        match self.store.head(&hash.object_key().into()).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::Missing(*hash)),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a whole blob into memory and checks it; for blobs up to
    /// [`VERIFY_BEFORE_SEND_LIMIT`].
    pub async fn read_verified(&self, hash: &ContentHash) -> Result<Bytes, BlobError> {
        let result = match self.store.get(&hash.object_key().into()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(BlobError::Missing(*hash)),
            Err(e) => return Err(e.into()),
        };
        let bytes = result.bytes().await?;
        if ContentHash::of(&bytes) != *hash {
            tracing::error!(%hash, "blob failed its integrity check");
            return Err(BlobError::Corrupt(*hash));
        }
        Ok(bytes)
    }

    /// Streams `range` of a blob while hashing all of it. The last piece is held back until
    /// the whole object has been hashed; on a mismatch the stream ends in an error instead,
    /// so a client never receives a complete response built from corrupt bytes.
    pub async fn stream_verified(
        &self,
        hash: &ContentHash,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let result = match self.store.get(&hash.object_key().into()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(BlobError::Missing(*hash)),
            Err(e) => return Err(e.into()),
        };
        let inner = result.into_stream().map_err(BlobError::from).boxed();
        Ok(VerifyingStream {
            inner,
            expected: *hash,
            hasher: Some(Sha256::new()),
            position: 0,
            range,
            held: None,
        }
        .boxed())
    }

    /// Streams `range` of a blob reading only the [`CHUNK`]-byte pieces it covers, each
    /// checked against its recorded hash before any of it is sent: a slice is never served
    /// corrupt, and a one-byte range reads one piece, not the whole blob.
    pub fn stream_range_verified(
        &self,
        hash: &ContentHash,
        chunks: &ChunkHashes,
        size: u64,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        if range.end > size || size.div_ceil(CHUNK) != chunks.len() as u64 {
            return Err(BlobError::Corrupt(*hash));
        }
        let store = self.store.clone();
        let key = ObjectPath::from(hash.object_key());
        let (hash, chunks) = (*hash, chunks.clone());
        let first = range.start / CHUNK;
        let pieces = futures_util::stream::iter(first..range.end.div_ceil(CHUNK));
        Ok(pieces
            .then(move |i| {
                let (store, key, chunks) = (store.clone(), key.clone(), chunks.clone());
                let range = range.clone();
                async move {
                    let at = i * CHUNK;
                    let piece = store.get_range(&key, at..(at + CHUNK).min(size)).await?;
                    let expected = usize::try_from(i).ok().and_then(|i| chunks.piece(i));
                    if expected != Some(hex::encode(Sha256::digest(&piece)).as_str()) {
                        tracing::error!(%hash, piece = i, "blob piece failed its integrity check");
                        return Err(BlobError::Corrupt(hash));
                    }
                    let from = range.start.max(at) - at;
                    let to = range.end.min(at + piece.len() as u64) - at;
                    Ok(piece.slice(from as usize..to as usize))
                }
            })
            .boxed())
    }

    /// Re-hashes a stored blob: `Ok` when intact.
    pub async fn verify(&self, hash: &ContentHash) -> Result<(), BlobError> {
        let size = self.size(hash).await?;
        let mut stream = self.stream_verified(hash, 0..size).await?;
        while let Some(chunk) = stream.next().await {
            chunk?;
        }
        Ok(())
    }

    /// Reads derived data (extracted texts) stored under `key`; `None` when absent. Derived
    /// data is not content-addressed by its own bytes, so it is not re-hashed.
    pub async fn get_derived(&self, key: &str) -> Result<Option<Bytes>, BlobError> {
        match self.store.get(&ObjectPath::from(key)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores derived data under `key` (overwriting: its content is a function of the key).
    pub async fn put_derived(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.store
            .put(&ObjectPath::from(key), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    /// Every blob in the store.
    pub async fn list(&self) -> Result<Vec<ListedBlob>, BlobError> {
        let prefix = ObjectPath::from("sha256");
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                Some(ListedBlob {
                    hash: ContentHash::from_object_key(m.location.as_ref())?,
                    size: m.size,
                    modified_ms: m.last_modified.timestamp_millis(),
                })
            })
            .collect())
    }

    /// Deletes a blob.
    pub async fn delete(&self, hash: &ContentHash) -> Result<(), BlobError> {
        match self.store.delete(&hash.object_key().into()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes spool files older than `older_than_ms` milliseconds: leftovers of uploads that
    /// were never acknowledged (a crash mid-upload).
    pub async fn clean_spool(&self, older_than_ms: u64) -> Result<usize, BlobError> {
        let mut removed = 0;
        let mut dir = tokio::fs::read_dir(&self.spool_dir).await?;
        while let Some(entry) = dir.next_entry().await? {
            let age = entry
                .metadata()
                .await?
                .modified()?
                .elapsed()
                .unwrap_or_default();
            if age.as_millis() >= u128::from(older_than_ms)
                && entry.file_name().to_string_lossy().ends_with(".part")
            {
                tokio::fs::remove_file(entry.path()).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Renames a fully written and fsynced file into place and makes the rename durable: the
/// file's data is already on disk, so what must last is its directory entry, and the entries
/// of the directories created for it (`sha256/ab/cd/` exist for all but the first blobs of a
/// store, so this is one directory fsync, not one per level).
async fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (from.to_owned(), to.to_owned());
    tokio::task::spawn_blocking(move || {
        let parent = to.parent().ok_or_else(|| io::Error::other("no parent"))?;
        let created: Vec<&Path> = parent.ancestors().take_while(|dir| !dir.exists()).collect();
        std::fs::create_dir_all(parent)?;
        std::fs::rename(&from, &to)?;
        std::fs::File::open(parent)?.sync_all()?;
        for dir in created {
            if let Some(above) = dir.parent() {
                std::fs::File::open(above)?.sync_all()?;
            }
        }
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
}

/// fsyncs a file and its directory chain up to the blob root, so a crash after the
/// acknowledgement cannot lose the blob.
async fn sync_path(path: &Path) -> io::Result<()> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&path)?.sync_all()?;
        // sha256/ab/cd/<hash>: the three directories above it may have just been created.
        for dir in path.ancestors().skip(1).take(4) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
}

/// A file removed when dropped.
#[derive(Debug)]
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        // Best effort: a leftover is swept by `clean_spool`.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An upload being written to the spool directory and hashed as it arrives.
#[derive(Debug)]
pub struct Spool {
    file: Option<BufWriter<tokio::fs::File>>,
    guard: TempFile,
    hasher: Sha256,
    /// The hash of the current [`CHUNK`]-byte piece, its length so far, and the hex hashes
    /// of the pieces before it.
    piece: Sha256,
    piece_len: u64,
    pieces: String,
    size: u64,
    head: Vec<u8>,
    limit: u64,
}

impl Spool {
    /// Appends a chunk; fails with [`BlobError::TooLarge`] past the limit (the spool file is
    /// removed when the `Spool` is dropped).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        let new_size = self.size + chunk.len() as u64;
        if new_size > self.limit {
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        if self.head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.hasher.update(chunk);
        let mut rest = chunk;
        while !rest.is_empty() {
            let take = usize::try_from(CHUNK - self.piece_len)
                .unwrap_or(usize::MAX)
                .min(rest.len());
            self.piece.update(&rest[..take]);
            self.piece_len += take as u64;
            rest = &rest[take..];
            if self.piece_len == CHUNK {
                let done = std::mem::take(&mut self.piece);
                self.pieces.push_str(&hex::encode(done.finalize()));
                self.piece_len = 0;
            }
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(chunk).await?;
        }
        self.size = new_size;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes the file to disk and returns the finished upload.
    pub async fn finish(mut self) -> Result<Spooled, BlobError> {
        if let Some(mut file) = self.file.take() {
            file.flush().await?;
            file.get_mut().sync_all().await?;
        }
        if self.piece_len > 0 {
            let last = std::mem::take(&mut self.piece);
            self.pieces.push_str(&hex::encode(last.finalize()));
        }
        Ok(Spooled {
            hash: ContentHash::from_digest(std::mem::take(&mut self.hasher)),
            chunks: ChunkHashes(std::mem::take(&mut self.pieces).into()),
            size: self.size,
            head: std::mem::take(&mut self.head),
            guard: TempFile(std::mem::take(&mut self.guard.0)),
        })
    }
}

/// A finished upload waiting in the spool directory; removed when dropped.
#[derive(Debug)]
pub struct Spooled {
    /// Its hash.
    pub hash: ContentHash,
    /// The hashes of its pieces.
    pub chunks: ChunkHashes,
    /// Its size.
    pub size: u64,
    /// Its first bytes, for sniffing.
    pub head: Vec<u8>,
    guard: TempFile,
}

/// See [`BlobStore::stream_verified`].
struct VerifyingStream {
    inner: BoxStream<'static, Result<Bytes, BlobError>>,
    expected: ContentHash,
    /// `None` once the end was reached and judged.
    hasher: Option<Sha256>,
    position: u64,
    range: Range<u64>,
    held: Option<Bytes>,
}

impl Stream for VerifyingStream {
    type Item = Result<Bytes, BlobError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(hasher) = this.hasher.as_mut() else {
                return Poll::Ready(None);
            };
            match this.inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.hasher = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    hasher.update(&chunk);
                    let start = this.position;
                    let end = start + chunk.len() as u64;
                    this.position = end;
                    let from = this.range.start.max(start);
                    let to = this.range.end.min(end);
                    if from < to {
                        let piece = chunk.slice((from - start) as usize..(to - start) as usize);
                        if let Some(previous) = this.held.replace(piece) {
                            return Poll::Ready(Some(Ok(previous)));
                        }
                    }
                }
                Poll::Ready(None) => {
                    let hasher = this.hasher.take().unwrap_or_default();
                    if ContentHash::from_digest(hasher) != this.expected {
                        tracing::error!(hash = %this.expected, "blob failed its integrity check while streaming");
                        this.held = None;
                        return Poll::Ready(Some(Err(BlobError::Corrupt(this.expected))));
                    }
                    return Poll::Ready(this.held.take().map(Ok));
                }
            }
        }
    }
}
