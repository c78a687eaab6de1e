//! The on-disk log: a stream of MessagePack values, one [`LogHeader`] followed by any number of
//! [`Record`]s, each encoded by rmp-serde as a map with field names. This module owns that
//! encoding, the writer ([`LogWriter`]: a large in-memory buffer pushed to the kernel on
//! [`LogWriter::flush`], so that the file always ends on a whole value after a flush, failed or
//! not) and the readers ([`read_log`], [`LogReader`]), including the rules that tell a log cut
//! short by a killed writer (tolerated, reported as `truncated_at`) from a damaged one (an
//! error). docs/log-format.md describes the format for readers in other languages.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::record::{LOG_FORMAT_VERSION, LOG_MAGIC, LogHeader, OLDEST_READABLE_VERSION, Record};

/// Buffered bytes past which [`LogWriter::append`] pushes them to the kernel without waiting
/// for a [`LogWriter::flush`]: bounds the writer's memory during bursts.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
const READ_BUFFER_BYTES: usize = 256 << 10;
/// Logs hold command lines and paths of every process: readable by their owner only.
const LOG_FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a depsetfs log")]
    NotALog { path: PathBuf },
    #[error(
        "{path}: log format version {found} is not supported (this depsetfs reads versions 1 to {supported})"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: corrupt record at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path}: cannot encode record: {reason}")]
    Encode { path: PathBuf, reason: String },
    #[error(
        "--log {path}: the file exists; pass --overwrite-log to replace it, or choose another path"
    )]
    Exists { path: PathBuf },
}

/// Refuses to record over an existing file (a log of an earlier run, or anything else) unless
/// `overwrite` is given: recording truncates it.
pub fn check_new_log(path: &Path, overwrite: bool) -> Result<(), LogError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) if !overwrite => Err(LogError::Exists {
            path: path.to_path_buf(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::io(path, source)),
    }
}

impl LogError {
    fn io(path: &Path, source: io::Error) -> LogError {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn not_a_log(path: &Path) -> LogError {
        LogError::NotALog {
            path: path.to_path_buf(),
        }
    }
}

/// Writes a log. Values are encoded into an in-memory buffer and reach the file only on
/// [`flush`](LogWriter::flush) (or when the buffer passes 1 MiB), with positioned writes at the
/// end of the last whole value, so that a failed write never leaves a partial value in the
/// middle of the log. Dropping the writer flushes it, ignoring errors.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    /// Encoded values not yet handed to the kernel; always whole values.
    buffer: Vec<u8>,
    records_in_buffer: u64,
    /// Length of the file prefix known to hold only whole values: where the next write goes.
    committed_len: u64,
    /// A failed write left bytes past `committed_len`; they are cut before the next write.
    tail_dirty: bool,
    records_flushed: u64,
    records_discarded: u64,
    #[cfg(test)]
    write_faults: Option<std::sync::Arc<AtomicBool>>,
}

impl LogWriter {
    /// Creates (or truncates) the log at `path` with mode 0600, and writes `header` to the
    /// kernel at once, so that even a log with no records identifies itself.
    pub fn create(path: &Path, header: &LogHeader) -> Result<LogWriter, LogError> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(LOG_FILE_MODE)
            .open(path)
            .map_err(|source| LogError::io(path, source))?;
        make_private(&file).map_err(|source| LogError::io(path, source))?;
        let mut writer = LogWriter {
            path: path.to_path_buf(),
            file,
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES),
            records_in_buffer: 0,
            committed_len: 0,
            tail_dirty: false,
            records_flushed: 0,
            records_discarded: 0,
            #[cfg(test)]
            write_faults: None,
        };
        writer.encode(header)?;
        writer.flush()?;
        Ok(writer)
    }

    /// Adds `record` to the buffer. It reaches the kernel on the next [`flush`](Self::flush),
    /// or now if the buffer has grown past its limit (an error then is the flush's).
    pub fn append(&mut self, record: &Record) -> Result<(), LogError> {
        self.encode(record)?;
        self.records_in_buffer += 1;
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the buffered values to the kernel (write(2), no fsync: the log must survive the
    /// death of this process, not of the machine). On failure the buffered values are
    /// discarded (counted in [`records_discarded`](Self::records_discarded)) and the file is cut
    /// back to its last whole value, so that later values still follow a well-formed prefix.
    pub fn flush(&mut self) -> Result<(), LogError> {
        if self.buffer.is_empty() && !self.tail_dirty {
            return Ok(());
        }
        let outcome = self.write_buffer();
        let batch_len = self.buffer.len() as u64;
        let batch_records = std::mem::take(&mut self.records_in_buffer);
        self.buffer.clear();
        match outcome {
            Ok(()) => {
                self.committed_len += batch_len;
                self.records_flushed += batch_records;
                Ok(())
            }
            Err(source) => {
                self.records_discarded += batch_records;
                // Best effort now, so that a kill -9 right after leaves whole values only; if it
                // fails, the cut is retried before the next write.
                let _ = self.cut_dirty_tail();
                Err(LogError::io(&self.path, source))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records handed to the kernel so far (the header is not counted).
    pub fn records_flushed(&self) -> u64 {
        self.records_flushed
    }

    /// Records lost because a flush failed.
    pub fn records_discarded(&self) -> u64 {
        self.records_discarded
    }

    /// Encodes `value` at the end of the buffer; on failure the buffer is left as it was, so it
    /// still holds whole values only.
    fn encode<T: Serialize>(&mut self, value: &T) -> Result<(), LogError> {
        let whole_len = self.buffer.len();
        rmp_serde::encode::write_named(&mut self.buffer, value).map_err(|error| {
            self.buffer.truncate(whole_len);
            LogError::Encode {
                path: self.path.clone(),
                reason: error.to_string(),
            }
        })
    }

    fn write_buffer(&mut self) -> io::Result<()> {
        self.cut_dirty_tail()?;
        let mut written = 0;
        while written < self.buffer.len() {
            let offset = self.committed_len + written as u64;
            match self.write_chunk(&self.buffer[written..], offset) {
                Ok(0) => {
                    self.tail_dirty = written > 0;
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.tail_dirty = written > 0;
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    #[cfg(not(test))]
    fn write_chunk(&self, bytes: &[u8], offset: u64) -> io::Result<usize> {
        self.file.write_at(bytes, offset)
    }

    #[cfg(test)]
    fn write_chunk(&self, bytes: &[u8], offset: u64) -> io::Result<usize> {
        let faulty = self
            .write_faults
            .as_ref()
            .is_some_and(|switch| switch.load(std::sync::atomic::Ordering::Relaxed));
        if !faulty {
            return self.file.write_at(bytes, offset);
        }
        if offset == self.committed_len && bytes.len() > 1 {
            return self.file.write_at(&bytes[..bytes.len() / 2], offset);
        }
        Err(io::Error::other("injected write fault"))
    }

    fn cut_dirty_tail(&mut self) -> io::Result<()> {
        if self.tail_dirty {
            self.file.set_len(self.committed_len)?;
            self.tail_dirty = false;
        }
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Like BufWriter: nobody is left to report an error to.
        let _ = self.flush();
    }
}

/// Sets mode 0600 on a log that existed before with another mode (`mode()` at open only applies
/// to new files). Only regular files: never chmod a device someone pointed the log at.
fn make_private(file: &File) -> io::Result<()> {
    let metadata = file.metadata()?;
    if metadata.is_file() && metadata.permissions().mode() & 0o7777 != LOG_FILE_MODE {
        file.set_permissions(Permissions::from_mode(LOG_FILE_MODE))?;
    }
    Ok(())
}

/// A whole log read into memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogContents {
    pub header: LogHeader,
    pub records: Vec<Record>,
    /// Byte offset of an incomplete last value (the writer was killed while writing it).
    pub truncated_at: Option<u64>,
}

/// Reads the whole log at `path`. Fails on the first corrupt record; a log cut short inside its
/// last value is not an error (see [`LogContents::truncated_at`]).
pub fn read_log(path: &Path) -> Result<LogContents, LogError> {
    let mut reader = LogReader::open(path)?;
    let records = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok(LogContents {
        truncated_at: reader.truncated_at,
        header: reader.header,
        records,
    })
}

/// Reads a log one record at a time. The header is read and checked by [`open`](Self::open);
/// iteration yields the records, and ends at the end of the file, at an incomplete last value
/// (then [`truncated_at`](Self::truncated_at) says where it starts) or after the first error.
pub struct LogReader {
    path: PathBuf,
    source: CountingReader<BufReader<File>>,
    header: LogHeader,
    truncated_at: Option<u64>,
    ended: bool,
}

impl LogReader {
    pub fn open(path: &Path) -> Result<LogReader, LogError> {
        let file = File::open(path).map_err(|source| LogError::io(path, source))?;
        let mut source = CountingReader::new(BufReader::with_capacity(READ_BUFFER_BYTES, file));
        let header = read_header(path, &mut source)?;
        Ok(LogReader {
            path: path.to_path_buf(),
            source,
            header,
            truncated_at: None,
            ended: false,
        })
    }

    pub fn header(&self) -> &LogHeader {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the incomplete last value starts, once iteration has ended on one.
    pub fn truncated_at(&self) -> Option<u64> {
        self.truncated_at
    }

    /// `Ok(None)` at the end of the log, whole or cut short.
    fn read_record(&mut self) -> Result<Option<Record>, LogError> {
        let start = self.source.offset;
        if self
            .source
            .at_end()
            .map_err(|e| LogError::io(&self.path, e))?
        {
            return Ok(None);
        }
        match rmp_serde::from_read(&mut self.source) {
            Ok(record) => Ok(Some(record)),
            Err(error) => match classify(error) {
                DecodeFailure::EndOfFile => {
                    self.truncated_at = Some(start);
                    Ok(None)
                }
                DecodeFailure::Io(source) => Err(LogError::io(&self.path, source)),
                DecodeFailure::Invalid(reason) => Err(LogError::Corrupt {
                    path: self.path.clone(),
                    offset: start,
                    reason,
                }),
            },
        }
    }
}

impl Iterator for LogReader {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let outcome = self.read_record();
        self.ended = !matches!(outcome, Ok(Some(_)));
        outcome.transpose()
    }
}

/// The two header fields every version keeps: enough to tell "not a log" from "a log of another
/// version" when the header does not decode as this version's [`LogHeader`].
#[derive(Deserialize)]
struct HeaderIdentity {
    magic: String,
    version: u32,
}

fn read_header(
    path: &Path,
    source: &mut CountingReader<BufReader<File>>,
) -> Result<LogHeader, LogError> {
    if source.at_end().map_err(|e| LogError::io(path, e))? {
        return Err(LogError::not_a_log(path));
    }
    let decode_error = match rmp_serde::from_read::<_, LogHeader>(&mut *source) {
        Ok(header) => {
            check_identity(path, &header.magic, header.version)?;
            return Ok(header);
        }
        Err(error) => error,
    };
    let reason = match classify(decode_error) {
        DecodeFailure::Io(error) => return Err(LogError::io(path, error)),
        DecodeFailure::EndOfFile => return Err(LogError::not_a_log(path)),
        DecodeFailure::Invalid(reason) => reason,
    };
    // Decode the first value again, keeping only what every version has.
    source.rewind().map_err(|e| LogError::io(path, e))?;
    let identity: HeaderIdentity =
        rmp_serde::from_read(&mut *source).map_err(|_| LogError::not_a_log(path))?;
    check_identity(path, &identity.magic, identity.version)?;
    Err(LogError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    })
}

fn check_identity(path: &Path, magic: &str, version: u32) -> Result<(), LogError> {
    if magic != LOG_MAGIC {
        return Err(LogError::not_a_log(path));
    }
    if !(OLDEST_READABLE_VERSION..=LOG_FORMAT_VERSION).contains(&version) {
        return Err(LogError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: LOG_FORMAT_VERSION,
        });
    }
    Ok(())
}

enum DecodeFailure {
    /// The file ended inside the value.
    EndOfFile,
    /// Reading failed for another reason than the end of the file.
    Io(io::Error),
    /// The bytes are not a value of the expected type.
    Invalid(String),
}

/// rmp-serde reports the end of the input as an I/O error while reading a marker or the data
/// after it; every other error means the bytes themselves are wrong.
fn classify(error: rmp_serde::decode::Error) -> DecodeFailure {
    use rmp_serde::decode::Error;
    match error {
        Error::InvalidMarkerRead(io_error) | Error::InvalidDataRead(io_error) => {
            if io_error.kind() == io::ErrorKind::UnexpectedEof {
                DecodeFailure::EndOfFile
            } else {
                DecodeFailure::Io(io_error)
            }
        }
        other => DecodeFailure::Invalid(other.to_string()),
    }
}

/// A reader that knows how many bytes it has handed out: the offset of the next value.
struct CountingReader<R> {
    inner: R,
    offset: u64,
}

impl<R> CountingReader<R> {
    fn new(inner: R) -> Self {
        CountingReader { inner, offset: 0 }
    }
}

impl<R: BufRead> CountingReader<R> {
    /// Whether no byte is left: the end of the log falls between two values.
    fn at_end(&mut self) -> io::Result<bool> {
        Ok(self.inner.fill_buf()?.is_empty())
    }
}

impl<R: Seek> CountingReader<R> {
    fn rewind(&mut self) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(0))?;
        self.offset = 0;
        Ok(())
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
impl LogWriter {
    /// While `switch` is on, writes fail the way a filling disk makes them fail: the first
    /// half of a batch reaches the file, then an error.
    pub(crate) fn inject_write_faults(&mut self, switch: std::sync::Arc<AtomicBool>) {
        self.write_faults = Some(switch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ScratchDir;
    use crate::fixtures::records::{access, every_record_variant, file_len, header};
    use crate::record::ExecEvent;

    fn write_log(path: &Path, records: &[Record]) {
        let mut writer = LogWriter::create(path, &header()).expect("create log");
        for record in records {
            writer.append(record).expect("append");
        }
        writer.flush().expect("flush");
    }

    fn encoded_len<T: Serialize>(value: &T) -> u64 {
        let mut bytes = Vec::new();
        rmp_serde::encode::write_named(&mut bytes, value).expect("encode");
        bytes.len() as u64
    }

    fn write_bytes(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).expect("write test file");
    }

    fn encode_named<T: Serialize>(value: &T) -> Vec<u8> {
        let mut bytes = Vec::new();
        rmp_serde::encode::write_named(&mut bytes, value).expect("encode");
        bytes
    }

    #[test]
    fn every_record_variant_round_trips() {
        let dir = ScratchDir::new("roundtrip");
        let path = dir.file("log");
        let records = every_record_variant();
        write_log(&path, &records);

        let contents = read_log(&path).expect("read log");
        assert_eq!(contents.header, header());
        assert_eq!(contents.records, records);
        assert_eq!(contents.truncated_at, None);

        let mut reader = LogReader::open(&path).expect("open log");
        assert_eq!(reader.header(), &header());
        let streamed: Vec<Record> = reader.by_ref().map(|r| r.expect("record")).collect();
        assert_eq!(streamed, records);
        assert_eq!(reader.truncated_at(), None);
        assert!(reader.next().is_none(), "iteration stays ended");
    }

    #[test]
    fn non_utf8_path_bytes_survive() {
        let dir = ScratchDir::new("bytes");
        let path = dir.file("log");
        let every_byte: Vec<u8> = (0..=255u8).collect();
        let mut record = access(1, &every_byte);
        record.target = Some(b"\xff\x00\xfe".to_vec());
        write_log(&path, &[Record::Access(record.clone())]);

        let contents = read_log(&path).expect("read log");
        assert_eq!(contents.records, vec![Record::Access(record)]);
    }

    #[test]
    fn records_are_named_maps_tagged_by_variant_name() {
        // The layout docs/log-format.md promises to readers in other languages.
        let bytes = encode_named(&Record::Access(access(1, b"/x")));
        let mut expected = vec![0x81, 0xa6];
        expected.extend_from_slice(b"Access");
        expected.push(0x8d); // 13 fields
        expected.push(0xa3);
        expected.extend_from_slice(b"pid");
        assert_eq!(&bytes[..expected.len()], &expected[..]);
        let op_open = [&[0xa2][..], b"op", &[0xa4], b"open"].concat();
        assert!(bytes.windows(op_open.len()).any(|w| w == op_open));
        let path_as_bin = [&[0xa4][..], b"path", &[0xc4, 2], b"/x"].concat();
        assert!(bytes.windows(path_as_bin.len()).any(|w| w == path_as_bin));
        let target_nil = [&[0xa6][..], b"target", &[0xc0]].concat();
        assert!(bytes.windows(target_nil.len()).any(|w| w == target_nil));
    }

    #[test]
    fn log_cut_anywhere_in_its_last_record_keeps_the_earlier_ones() {
        let dir = ScratchDir::new("cut");
        let full = dir.file("full");
        let cut = dir.file("cut");
        for last in every_record_variant() {
            let mut records = every_record_variant();
            records.push(last.clone());
            write_log(&full, &records);
            let bytes = std::fs::read(&full).expect("read log bytes");
            let last_start = bytes.len() as u64 - encoded_len(&last);
            let earlier = &records[..records.len() - 1];

            write_bytes(&cut, &bytes[..last_start as usize]);
            let contents = read_log(&cut).expect("cut between values");
            assert_eq!(contents.records, earlier);
            assert_eq!(contents.truncated_at, None);

            for len in last_start as usize + 1..bytes.len() {
                write_bytes(&cut, &bytes[..len]);
                let contents = read_log(&cut)
                    .unwrap_or_else(|e| panic!("cut at {len} of {}: {e}", bytes.len()));
                assert_eq!(contents.records, earlier, "cut at {len}");
                assert_eq!(contents.truncated_at, Some(last_start), "cut at {len}");
            }
        }
    }

    #[test]
    fn garbage_between_records_is_corrupt_at_its_offset() {
        let dir = ScratchDir::new("garbage");
        let path = dir.file("log");
        let records = every_record_variant();
        write_log(&path, &records[..2]);
        let garbage_at = file_len(&path);
        let good_tail = encode_named(&records[2]);

        // 0xc1 is the one marker MessagePack never uses; 0x07 is valid MessagePack but no
        // record; the map is a record-shaped value with an unknown variant.
        let unknown_variant = encode_named(&std::collections::BTreeMap::from([("Mount", 1)]));
        for garbage in [vec![0xc1], vec![0x07], unknown_variant] {
            let mut bytes = std::fs::read(&path).expect("read log bytes");
            bytes.truncate(garbage_at as usize);
            bytes.extend_from_slice(&garbage);
            bytes.extend_from_slice(&good_tail);
            write_bytes(&path, &bytes);

            match read_log(&path) {
                Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset, garbage_at),
                other => panic!("expected Corrupt, got {other:?}"),
            }
            let mut reader = LogReader::open(&path).expect("open log");
            assert_eq!(
                reader.next().map(|r| r.ok()),
                Some(Some(records[0].clone()))
            );
            assert_eq!(
                reader.next().map(|r| r.ok()),
                Some(Some(records[1].clone()))
            );
            assert!(matches!(reader.next(), Some(Err(LogError::Corrupt { .. }))));
            assert!(reader.next().is_none(), "iteration ends after an error");
        }
    }

    fn assert_not_a_log(path: &Path) {
        match read_log(path) {
            Err(LogError::NotALog { path: reported }) => assert_eq!(reported, path),
            other => panic!("expected NotALog, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_is_not_a_log() {
        let dir = ScratchDir::new("empty");
        let path = dir.file("log");
        write_bytes(&path, b"");
        assert_not_a_log(&path);
    }

    #[test]
    fn random_bytes_are_not_a_log() {
        let dir = ScratchDir::new("random");
        let path = dir.file("log");
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in [1, 2, 7, 64, 1000, 70_000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    // xorshift64: deterministic noise without a dependency.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            write_bytes(&path, &bytes);
            assert_not_a_log(&path);
        }
        write_bytes(&path, b"hello, this is a text file\n");
        assert_not_a_log(&path);
    }

    #[test]
    fn msgpack_other_than_a_header_is_not_a_log() {
        let dir = ScratchDir::new("wrongmagic");
        let path = dir.file("log");
        let mut wrong_magic = header();
        wrong_magic.magic = "something-else".to_string();
        write_bytes(&path, &encode_named(&wrong_magic));
        assert_not_a_log(&path);

        write_bytes(&path, &encode_named(&every_record_variant()[0]));
        assert_not_a_log(&path);
    }

    #[test]
    fn other_format_version_is_unsupported() {
        let dir = ScratchDir::new("version");
        let path = dir.file("log");
        let mut newer = header();
        newer.version = LOG_FORMAT_VERSION + 1;
        write_bytes(&path, &encode_named(&newer));
        match read_log(&path) {
            Err(LogError::UnsupportedVersion {
                found, supported, ..
            }) => {
                assert_eq!(found, LOG_FORMAT_VERSION + 1);
                assert_eq!(supported, LOG_FORMAT_VERSION);
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }

        // A later version whose header this version cannot decode at all.
        #[derive(Serialize)]
        struct FutureHeader {
            magic: &'static str,
            version: u32,
            layout: Vec<u8>,
        }
        let future = FutureHeader {
            magic: LOG_MAGIC,
            version: 9,
            layout: vec![1, 2],
        };
        write_bytes(&path, &encode_named(&future));
        assert!(matches!(
            read_log(&path),
            Err(LogError::UnsupportedVersion { found: 9, .. })
        ));
    }

    #[test]
    fn damaged_header_of_this_version_is_corrupt() {
        #[derive(Serialize)]
        struct IncompleteHeader {
            magic: &'static str,
            version: u32,
        }
        let dir = ScratchDir::new("badheader");
        let path = dir.file("log");
        let incomplete = IncompleteHeader {
            magic: LOG_MAGIC,
            version: LOG_FORMAT_VERSION,
        };
        write_bytes(&path, &encode_named(&incomplete));
        assert!(matches!(
            read_log(&path),
            Err(LogError::Corrupt { offset: 0, .. })
        ));
    }

    #[test]
    fn header_is_on_disk_as_soon_as_the_log_is_created() {
        let dir = ScratchDir::new("create");
        let path = dir.file("log");
        let writer = LogWriter::create(&path, &header()).expect("create log");
        let contents = read_log(&path).expect("read log");
        assert_eq!(contents.header, header());
        assert!(contents.records.is_empty());
        drop(writer);
    }

    #[test]
    fn appended_records_reach_the_file_on_flush() {
        let dir = ScratchDir::new("flush");
        let path = dir.file("log");
        let mut writer = LogWriter::create(&path, &header()).expect("create log");
        let record = Record::Exec(ExecEvent { ts_ns: 1, pid: 2 });
        writer.append(&record).expect("append");
        assert!(read_log(&path).expect("read log").records.is_empty());
        writer.flush().expect("flush");
        assert_eq!(read_log(&path).expect("read log").records, vec![record]);
        assert_eq!(writer.records_flushed(), 1);
        assert_eq!(writer.path(), path);
    }

    #[test]
    fn full_buffer_is_written_without_waiting_for_flush() {
        let dir = ScratchDir::new("bigbuffer");
        let path = dir.file("log");
        let mut writer = LogWriter::create(&path, &header()).expect("create log");
        let long_path = vec![b'a'; 64 << 10];
        let record = Record::Access(access(1, &long_path));
        for _ in 0..(WRITE_BUFFER_BYTES / long_path.len() + 1) {
            writer.append(&record).expect("append");
        }
        let on_disk = read_log(&path).expect("read log").records.len();
        assert!(on_disk > 0, "a full buffer was pushed to the file");
        assert_eq!(on_disk as u64, writer.records_flushed());
    }

    #[test]
    fn log_is_private_even_if_it_existed() {
        let dir = ScratchDir::new("mode");
        let path = dir.file("log");
        write_bytes(&path, b"old contents");
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        let writer = LogWriter::create(&path, &header()).expect("create log");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
        drop(writer);
        assert!(read_log(&path).is_ok(), "the old contents were truncated");
    }

    #[test]
    fn failed_flush_discards_its_batch_and_keeps_the_log_well_formed() {
        let dir = ScratchDir::new("failedflush");
        let path = dir.file("log");
        let mut writer = LogWriter::create(&path, &header()).expect("create log");
        let faults = std::sync::Arc::new(AtomicBool::new(false));
        writer.inject_write_faults(std::sync::Arc::clone(&faults));
        let first = Record::Exec(ExecEvent { ts_ns: 1, pid: 1 });
        let lost = Record::Exec(ExecEvent { ts_ns: 2, pid: 2 });
        let after = Record::Exec(ExecEvent { ts_ns: 3, pid: 3 });
        writer.append(&first).expect("append");
        writer.flush().expect("flush");
        let whole_len = file_len(&path);

        faults.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.append(&lost).expect("append only buffers");
        assert!(matches!(writer.flush(), Err(LogError::Io { .. })));
        assert_eq!(writer.records_discarded(), 1);
        assert_eq!(file_len(&path), whole_len, "the half-written batch was cut");

        faults.store(false, std::sync::atomic::Ordering::Relaxed);
        writer.append(&after).expect("append");
        writer.flush().expect("flush after the fault");
        assert_eq!(writer.records_flushed(), 2);
        let contents = read_log(&path).expect("read log");
        assert_eq!(contents.records, vec![first, after]);
        assert_eq!(contents.truncated_at, None);
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let dir = ScratchDir::new("missing");
        let path = dir.file("does-not-exist");
        match read_log(&path) {
            Err(error @ LogError::Io { .. }) => {
                let message = error.to_string();
                assert!(
                    message.starts_with(&path.display().to_string()),
                    "{message}"
                );
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
