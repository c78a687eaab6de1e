//! The `tar` format: the set as a ustar stream with PAX extended headers, written as the
//! walker goes (no copy of the set is made first). Built on the `tar` crate's header and
//! block handling; the PAX records are ours: `SCHILY.xattr.NAME` for extended attributes (as
//! GNU tar and Go's archive/tar read them), `mtime`/`atime` with nanoseconds, and `path` /
//! `linkpath` when a name does not fit the ustar fields. Paths are relative (`usr/bin/ls`),
//! directories end with `/`, the root itself is not an entry. A file is written with the size
//! seen when it was opened: cut there if it grew, padded with zeros if it shrank.

use std::io::{self, Read, Write};
use std::path::Path;

use ::tar::{Builder, EntryType, Header};

use super::ExportError;
use super::walk::{Body, Item, Meta, Progress, Sink, Stubs, Totals, add_mount_dirs, walk};
use crate::analysis::closure::DeploymentSet;

/// What a tar stream carries besides the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// A tar export (file or stdout): opens with depsetfs's PAX global header ([`TAG`]), by
    /// which `--force` knows an earlier export.
    Export,
    /// An OCI layer: no global header (a layer is applied, not kept), but the empty
    /// directories to mount on ([`super::walk::MOUNT_DIRS`]).
    Layer,
}

/// The name of the global header entry (as `git archive` names its own).
const GLOBAL_NAME: &str = "pax_global_header";
/// The PAX record key of the tag: `comment` is ignored by every extractor.
const TAG_KEY: &[u8] = b"comment";

/// The value of the tag record: [`super::output::marker_text`] for `tar`, without the newline.
fn tag() -> String {
    super::output::marker_text("tar").trim_end().to_string()
}

/// Whether the first 1024 bytes of a file are depsetfs's global header and its records.
pub fn is_tagged(head: &[u8; 1024]) -> bool {
    let (header, body) = head.split_at(512);
    let name_ok = header.starts_with(GLOBAL_NAME.as_bytes()) && header[GLOBAL_NAME.len()] == 0;
    let mut record = Vec::new();
    PaxRecords::add_to(&mut record, TAG_KEY, tag().as_bytes());
    name_ok && header[156] == b'g' && body.starts_with(&record)
}

/// Writes the set as a tar file at `path` (created here).
pub fn write_file(
    set: &DeploymentSet,
    stubs: &Stubs,
    source: &Path,
    path: &Path,
    progress: Progress<'_>,
) -> Result<Totals, ExportError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| ExportError::Write {
            path: path.to_path_buf(),
            action: "create the tar file",
            source,
        })?;
    let out = io::BufWriter::with_capacity(1 << 20, file);
    let (totals, out) = write_stream(set, stubs, source, out, path, Stream::Export, progress)?;
    let file = out.into_inner().map_err(|e| ExportError::Write {
        path: path.to_path_buf(),
        action: "write the tar file",
        source: e.into_error(),
    })?;
    file.sync_all().map_err(|source| ExportError::Write {
        path: path.to_path_buf(),
        action: "sync the tar file",
        source,
    })?;
    Ok(totals)
}

/// Writes the set as a tar stream to `out`; `name` is what errors call the output, `kind`
/// what else the stream carries.
pub fn write_stream<W: Write>(
    set: &DeploymentSet,
    stubs: &Stubs,
    source: &Path,
    out: W,
    name: &Path,
    kind: Stream,
    progress: Progress<'_>,
) -> Result<(Totals, W), ExportError> {
    let mut sink = TarSink {
        builder: Builder::new(out),
        name: name.to_path_buf(),
    };
    if kind == Stream::Export {
        sink.append_tag()?;
    }
    let mut totals = walk(set, stubs, source, &mut sink, progress)?;
    if kind == Stream::Layer {
        add_mount_dirs(set, source, &mut sink, &mut totals)?;
    }
    let out = sink.builder.into_inner().map_err(sink_error(name))?;
    Ok((totals, out))
}

struct TarSink<W: Write> {
    builder: Builder<W>,
    name: std::path::PathBuf,
}

fn sink_error(name: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Write {
        path: name.to_path_buf(),
        action: "write the tar stream",
        source,
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn put(&mut self, item: Item) -> Result<(), ExportError> {
        let rel = item.relative().to_vec();
        if rel.is_empty() {
            return Ok(());
        }
        let mut name = rel;
        if matches!(item.body, Body::Dir) {
            name.push(b'/');
        }
        let mut pax = PaxRecords::default();
        let mut header = Header::new_ustar();
        set_meta(&mut header, &item.meta, &mut pax);
        set_name(&mut header, &name, &mut pax);
        let mut data: Box<dyn Read> = Box::new(io::empty());
        match item.body {
            Body::Dir => header.set_entry_type(EntryType::Directory),
            Body::File { file, size } => {
                header.set_entry_type(EntryType::Regular);
                header.set_size(size);
                data = Box::new(file.take(size).chain(io::repeat(0)).take(size));
            }
            Body::Symlink(target) => {
                header.set_entry_type(EntryType::Symlink);
                set_link(&mut header, &target, &mut pax);
            }
            Body::HardLink(first) => {
                header.set_entry_type(EntryType::Link);
                set_link(&mut header, super::walk::relative(&first), &mut pax);
            }
            Body::Fifo => header.set_entry_type(EntryType::Fifo),
            // tar has no socket type: a socket is recreated by its server at bind time.
            Body::Socket => return Ok(()),
            Body::CharDevice(rdev) => set_device(&mut header, EntryType::Char, rdev),
            Body::BlockDevice(rdev) => set_device(&mut header, EntryType::Block, rdev),
        }
        if !pax.0.is_empty() {
            self.append_pax(&name, &pax)?;
        }
        header.set_cksum();
        self.builder
            .append(&header, data)
            .map_err(sink_error(&self.name))
    }
}

impl<W: Write> TarSink<W> {
    /// The PAX global header that opens a tar export: `comment=depsetfs-export 1 tar`.
    fn append_tag(&mut self) -> Result<(), ExportError> {
        let mut pax = PaxRecords::default();
        pax.add(TAG_KEY, tag().as_bytes());
        self.append_pax_header(GLOBAL_NAME, EntryType::XGlobalHeader, &pax)
    }

    /// The PAX extended header of the entry `name` that follows it.
    fn append_pax(&mut self, name: &[u8], pax: &PaxRecords) -> Result<(), ExportError> {
        let mut pax_name = b"PaxHeaders/".to_vec();
        pax_name.extend(name.iter().rev().take(80).rev().filter(|&&b| b != b'/'));
        let pax_name = String::from_utf8_lossy(&pax_name);
        self.append_pax_header(&pax_name, EntryType::XHeader, pax)
    }

    /// A PAX header entry (extended or global) holding `pax`, owned by root, dated 0.
    fn append_pax_header(
        &mut self,
        path: &str,
        kind: EntryType,
        pax: &PaxRecords,
    ) -> Result<(), ExportError> {
        let mut header = Header::new_ustar();
        let _ = header.set_path(path);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(pax.0.len() as u64);
        header.set_cksum();
        self.builder
            .append(&header, pax.0.as_slice())
            .map_err(sink_error(&self.name))
    }
}

/// The body of a PAX extended header: `LEN key=value\n` records.
#[derive(Default)]
struct PaxRecords(Vec<u8>);

impl PaxRecords {
    fn add(&mut self, key: &[u8], value: &[u8]) {
        PaxRecords::add_to(&mut self.0, key, value);
    }

    fn add_to(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
        // LEN counts itself: find the length whose decimal width makes the sum right.
        let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
}

fn set_meta(header: &mut Header, meta: &Meta, pax: &mut PaxRecords) {
    header.set_size(0);
    header.set_mode(meta.mode);
    header.set_uid(u64::from(meta.uid));
    header.set_gid(u64::from(meta.gid));
    header.set_mtime(meta.mtime.0.max(0) as u64);
    // Whole seconds fit the ustar field; finer times need PAX records (atime rides along).
    if meta.mtime.1 != 0 {
        pax.add(b"mtime", time_text(meta.mtime).as_bytes());
        pax.add(b"atime", time_text(meta.atime).as_bytes());
    }
    for (name, value) in &meta.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name.as_encoded_bytes());
        pax.add(&key, value);
    }
}

fn time_text((secs, nanos): (i64, i64)) -> String {
    if nanos == 0 {
        secs.to_string()
    } else {
        format!("{secs}.{nanos:09}")
    }
}

fn set_name(header: &mut Header, name: &[u8], pax: &mut PaxRecords) {
    let text = String::from_utf8_lossy(name);
    let fits = name.is_ascii() && header.set_path(text.as_ref()).is_ok();
    if !fits {
        pax.add(b"path", name);
        let _ = header.set_path(fallback_name(name));
    }
}

fn set_link(header: &mut Header, target: &[u8], pax: &mut PaxRecords) {
    let fits = target.len() <= 100 && header.set_link_name_literal(target).is_ok();
    if !fits {
        pax.add(b"linkpath", target);
        let _ = header.set_link_name_literal(&target[..target.len().min(100)]);
    }
}

/// Something ustar accepts in place of a name carried by a PAX `path` record.
fn fallback_name(name: &[u8]) -> String {
    let tail: Vec<u8> = name
        .iter()
        .rev()
        .take(99)
        .rev()
        .map(|&b| {
            if b.is_ascii_graphic() && b != b'/' {
                b
            } else {
                b'_'
            }
        })
        .collect();
    String::from_utf8_lossy(&tail).into_owned()
}

fn set_device(header: &mut Header, kind: EntryType, rdev: u64) {
    header.set_entry_type(kind);
    let _ = header.set_device_major(libc::major(rdev as libc::dev_t));
    let _ = header.set_device_minor(libc::minor(rdev as libc::dev_t));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut pax = PaxRecords::default();
        pax.add(b"path", b"a");
        assert_eq!(pax.0, b"9 path=a\n");
        let mut long = PaxRecords::default();
        long.add(b"k", &[b'v'; 95]);
        // 1 + 95 + 3 = 99 plus "100" would be 102; "102 k=..." is 102 bytes.
        assert_eq!(long.0.len(), 102);
        assert!(long.0.starts_with(b"102 k="));
    }

    #[test]
    fn nanosecond_times_keep_their_fraction() {
        assert_eq!(time_text((12, 0)), "12");
        assert_eq!(time_text((12, 5)), "12.000000005");
    }
}
