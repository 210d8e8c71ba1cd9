//! The audit journal: a local file of JSON lines, one per recorded read, kept in segments.
//!
//! The writer ([`super::writer`]) appends lines and fsyncs them before the reads are answered;
//! the mover ([`super::mover`]) reads them back and deletes each segment once all of it is in
//! the table. Positions are byte offsets in the whole journal: segment files are named by the
//! position of their first byte, so each one starts where the one before it ends.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How far ahead a journal segment is allocated, at most.
const STEP: u64 = 64 * 1024 * 1024;
/// A segment is closed, and the next one started, once it holds this much.
pub(super) const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The journal's newest segment, open for appending: lines up to `end`, zeros after it up to
/// `allocated`. Its first byte is at position `base` of the whole journal.
pub(super) struct Journal {
    dir: PathBuf,
    file: std::fs::File,
    base: u64,
    end: u64,
    /// Bytes before `end` written since the last sync (all in this segment).
    unsynced: u64,
    allocated: u64,
    segment_bytes: u64,
}

impl Journal {
    /// Opens the journal in `dir` for appending after its last complete line.
    ///
    /// Each segment is allocated ahead in large steps, so an append changes no file size and
    /// its fsync writes only the data; the bytes after the last line are zeros (JSON lines
    /// never hold a NUL byte). A torn last line was never acknowledged (its fsync did not
    /// return): it is zeroed too. Only the newest segment can have one: a segment is closed
    /// only after an append to it was made durable.
    pub(super) fn open(dir: &Path, segment_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // A journal of one file, as earlier versions kept it, is the segment at position 0.
        let single = dir.join("journal.jsonl");
        if single.exists() {
            std::fs::rename(&single, segment_path(dir, 0))?;
            sync_dir(dir)?;
        }
        let base = segments(dir)?.last().map_or(0, |(base, _)| *base);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(segment_path(dir, base))?;
        sync_dir(dir)?;
        let (end, complete) = lines_end(&mut file)?;
        if complete < end {
            let torn = usize::try_from(end - complete).map_err(std::io::Error::other)?;
            file.write_all_at(&vec![0; torn], complete)?;
            file.sync_data()?;
        }
        let allocated = file.metadata()?.len();
        Ok(Self {
            dir: dir.to_owned(),
            file,
            base,
            end: complete,
            unsynced: 0,
            allocated,
            segment_bytes,
        })
    }

    /// Writes `lines` after the last one; they are durable once [`Journal::sync`] returns.
    pub(super) fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if self.end > 0 && self.end + lines.len() as u64 > self.segment_bytes {
            // A segment is closed only once all of it is durable.
            self.sync()?;
            self.next_segment()?;
        }
        let needed = self.end + lines.len() as u64;
        if needed > self.allocated {
            // The new size is made durable once here, not at every append.
            let step = STEP.min(self.segment_bytes).max(1);
            self.allocated = needed.div_ceil(step) * step;
            self.file.set_len(self.allocated)?;
            self.file.sync_all()?;
        }
        self.file.write_all_at(lines, self.end)?;
        self.end = needed;
        self.unsynced += lines.len() as u64;
        Ok(())
    }

    /// Makes every line written durable.
    pub(super) fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced > 0 {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Lines written but not known to be durable are written over by the next ones (nobody
    /// was told they were recorded).
    pub(super) fn forget_unsynced(&mut self) {
        self.end -= self.unsynced;
        self.unsynced = 0;
    }

    /// The position in the whole journal up to which every line is durable.
    pub(super) fn durable_end(&self) -> u64 {
        self.base + self.end - self.unsynced
    }

    /// Closes the segment (everything in it is durable already) and starts the next one, at
    /// the position right after its last line; the new file's name is durable before any
    /// event in it is acknowledged.
    fn next_segment(&mut self) -> std::io::Result<()> {
        let base = self.base + self.end;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(segment_path(&self.dir, base))?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.base = base;
        self.end = 0;
        self.allocated = 0;
        Ok(())
    }
}

/// This node's id, kept in the journal's folder: the table records how far it moved each
/// node's journal. Made durable before any event is journaled under it: a node id lost in a
/// crash would make the mover, under a new id, move the journal a second time.
pub(super) fn node_id(dir: &Path) -> std::io::Result<String> {
    if let Ok(id) = std::fs::read_to_string(dir.join("node-id"))
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_owned());
    }
    let id = uuid::Uuid::now_v7().to_string();
    let mut file = std::fs::File::create(dir.join("node-id"))?;
    std::io::Write::write_all(&mut file, id.as_bytes())?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(id)
}

/// Where a segment's lines end: the first NUL byte (or the end of the file), and the end of
/// the last complete line before it. Reads the lines in 1 MiB pieces and stops at the zeros,
/// so the preallocated tail is never read.
fn lines_end(file: &mut std::fs::File) -> std::io::Result<(u64, u64)> {
    use std::io::Read;
    let mut buf = vec![0u8; 1024 * 1024];
    let (mut at, mut complete) = (0u64, 0u64);
    loop {
        let n = file.read(&mut buf)?;
        let piece = &buf[..n];
        let zero = piece.iter().position(|b| *b == 0);
        let data = &piece[..zero.unwrap_or(n)];
        if let Some(i) = data.iter().rposition(|b| *b == b'\n') {
            complete = at + i as u64 + 1;
        }
        at += data.len() as u64;
        if n == 0 || zero.is_some() {
            return Ok((at, complete));
        }
    }
}

/// The file of the segment starting at position `base` of the journal.
fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("journal-{base:020}.jsonl"))
}

/// The journal's segments, oldest first: (position of the first byte, file).
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_prefix("journal-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((base, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// Makes the creation, renaming or removal of files in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Deletes the segments whose every line is in the table (all of a segment is moved once the
/// next one starts at or before `moved`).
pub(super) fn drop_moved_segments(dir: &Path, moved: u64) -> std::io::Result<()> {
    let all = segments(dir)?;
    let mut dropped = false;
    for pair in all.windows(2) {
        if pair[1].0 <= moved {
            std::fs::remove_file(&pair[0].1)?;
            dropped = true;
        }
    }
    if dropped {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The journal's bytes from position `from` to `to`, at most `cap` of them, read across
/// segments.
pub(super) fn read_span(dir: &Path, from: u64, to: u64, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let end = to.min(from.saturating_add(cap));
    let all = segments(dir)?;
    if all.first().is_none_or(|(base, _)| *base > from) {
        return Err(std::io::Error::other(format!(
            "no segment holds position {from}"
        )));
    }
    let mut out = Vec::with_capacity(usize::try_from(end - from).map_err(std::io::Error::other)?);
    for (i, (base, path)) in all.iter().enumerate() {
        let segment_end = all.get(i + 1).map_or(end, |(next, _)| *next).min(end);
        let at = from + out.len() as u64;
        if segment_end <= at {
            continue;
        }
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(at - base))?;
        let len = usize::try_from(segment_end - at).map_err(std::io::Error::other)?;
        let filled = out.len();
        out.resize(filled + len, 0);
        f.read_exact(&mut out[filled..])?;
    }
    Ok(out)
}
