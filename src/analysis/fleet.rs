//! `dump --format parquet`: a log's records, or its deployment set, as an Apache Parquet file,
//! so that the logs of a whole fleet can be queried with an engine that already exists (DuckDB
//! on one machine, Spark or Trino on many) instead of one made here. Every row carries the
//! log's `host` and a run `label` (the header's `--label`, else the log's file stem; in a
//! merged log each run's own host and label, from its `Run` segment), so the files of many logs can
//! be read as one table. Three tables, each a file, schemas in docs/fleet.md: [`ACCESS_SCHEMA`],
//! one row per access record (streamed from the log: memory stays one row group),
//! [`NET_SCHEMA`], one row per network record, and [`SET_SCHEMA`], one row per path of a
//! deployment set. Written with the `parquet` crate's
//! low-level column writers (no Arrow), uncompressed with dictionary encoding: the repeated
//! strings (host, label, op, exe, most paths) are stored once per row group.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::analysis::closure::DeploymentSet;
use crate::log::LogError;
use crate::record::{Access, LogHeader, NetCall, Record, intent};

/// Rows per row group: what is held in memory before it is written.
pub const ROWS_PER_GROUP: usize = 128 * 1024;

/// One row per access record (docs/fleet.md).
pub const ACCESS_SCHEMA: &str = "message access {
  REQUIRED INT64 time (TIMESTAMP(NANOS,true));
  REQUIRED INT64 last_time (TIMESTAMP(NANOS,true));
  REQUIRED BYTE_ARRAY host (UTF8);
  REQUIRED BYTE_ARRAY label (UTF8);
  REQUIRED INT64 pid;
  REQUIRED INT64 start;
  REQUIRED BYTE_ARRAY exe (UTF8);
  REQUIRED BYTE_ARRAY op (UTF8);
  REQUIRED BYTE_ARRAY path (UTF8);
  OPTIONAL BYTE_ARRAY target (UTF8);
  REQUIRED BYTE_ARRAY kind (UTF8);
  REQUIRED BYTE_ARRAY intent (UTF8);
  REQUIRED INT32 errno;
  REQUIRED BOOLEAN ok;
  REQUIRED INT64 count;
  REQUIRED INT64 bytes;
}";

/// One row per network record: connect, bind, listen, accept (docs/fleet.md).
pub const NET_SCHEMA: &str = "message net {
  REQUIRED INT64 time (TIMESTAMP(NANOS,true));
  REQUIRED BYTE_ARRAY host (UTF8);
  REQUIRED BYTE_ARRAY label (UTF8);
  REQUIRED INT64 pid;
  REQUIRED INT64 start;
  REQUIRED BYTE_ARRAY exe (UTF8);
  REQUIRED BYTE_ARRAY call (UTF8);
  REQUIRED BYTE_ARRAY family (UTF8);
  REQUIRED BYTE_ARRAY address (UTF8);
  OPTIONAL BYTE_ARRAY socket_type (UTF8);
}";

/// One row per path of a deployment set (docs/fleet.md).
pub const SET_SCHEMA: &str = "message set_entry {
  REQUIRED BYTE_ARRAY host (UTF8);
  REQUIRED BYTE_ARRAY label (UTF8);
  REQUIRED BYTE_ARRAY strategy (UTF8);
  REQUIRED BYTE_ARRAY path (UTF8);
  REQUIRED BYTE_ARRAY kind (UTF8);
  REQUIRED INT64 size;
  REQUIRED BYTE_ARRAY reason (UTF8);
  REQUIRED INT64 users;
}";

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{}: cannot write the Parquet file: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{}: cannot create it: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The label of a log older than labels: its file name without the extension.
pub fn label_of(log: &Path) -> String {
    log.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What the rows of a record take from the records before it: its run's host and label (from
/// the `Run` segments of a merged log) and the process image of each (run, pid, start), the
/// `exe` of its last process record.
struct RowContext<'a> {
    header: &'a LogHeader,
    fallback: &'a str,
    run: u32,
    host: ByteArray,
    label: ByteArray,
    exes: HashMap<(u32, u32, u64), ByteArray>,
}

impl<'a> RowContext<'a> {
    fn new(header: &'a LogHeader, fallback: &'a str) -> RowContext<'a> {
        let (host, label) = run_names(header, None, fallback);
        RowContext {
            header,
            fallback,
            run: 0,
            host,
            label,
            exes: HashMap::new(),
        }
    }

    /// Takes in a run or process record; hands back every other record for a row.
    fn read(&mut self, record: Record) -> Option<Record> {
        match record {
            Record::Run(segment) => {
                self.run = segment.index;
                (self.host, self.label) = run_names(self.header, Some(self.run), self.fallback);
                None
            }
            Record::Process(info) => {
                self.exes
                    .insert((self.run, info.pid, info.start), lossy(&info.exe));
                None
            }
            other => Some(other),
        }
    }

    /// The process image of (pid, start) in the current run; empty when none was recorded.
    fn exe(&self, pid: u32, start: u64) -> ByteArray {
        self.exes
            .get(&(self.run, pid, start))
            .cloned()
            .unwrap_or_else(|| text(""))
    }
}

/// The host and label of the rows of run `run` (`None`: the log's own header, before any
/// `Run` segment); `fallback` names a run without a label (the log's file stem, `#N` added
/// for a run of a merged log).
fn run_names(header: &LogHeader, run: Option<u32>, fallback: &str) -> (ByteArray, ByteArray) {
    let (host, label) = match run.and_then(|run| header.runs.get(run as usize).map(|h| (run, h))) {
        Some((run, run_header)) => (
            run_header.host.clone(),
            run_header
                .label
                .clone()
                .unwrap_or_else(|| format!("{fallback}#{}", run + 1)),
        ),
        None => (
            header.host.clone(),
            header.label.clone().unwrap_or_else(|| fallback.to_string()),
        ),
    };
    (text(host), text(label))
}

/// The values of one column of the row group being built.
enum Column {
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Bool(Vec<bool>),
    Text(Vec<ByteArray>),
    /// Values of the rows that have one, and a definition level (0 or 1) per row.
    OptionalText(Vec<ByteArray>, Vec<i16>),
}

impl Column {
    /// The buffer of a field of one of the schemas above (a leaf of a physical type).
    fn for_field(field: &parquet::schema::types::Type) -> Column {
        use parquet::basic::{Repetition, Type as Physical};
        match (
            field.get_physical_type(),
            field.get_basic_info().repetition(),
        ) {
            (Physical::INT64, _) => Column::Int64(Vec::new()),
            (Physical::INT32, _) => Column::Int32(Vec::new()),
            (Physical::BOOLEAN, _) => Column::Bool(Vec::new()),
            (_, Repetition::OPTIONAL) => Column::OptionalText(Vec::new(), Vec::new()),
            _ => Column::Text(Vec::new()),
        }
    }

    fn clear(&mut self) {
        match self {
            Column::Int64(v) => v.clear(),
            Column::Int32(v) => v.clear(),
            Column::Bool(v) => v.clear(),
            Column::Text(v) => v.clear(),
            Column::OptionalText(v, levels) => {
                v.clear();
                levels.clear();
            }
        }
    }
}

/// A Parquet file being written one row group at a time.
struct Table {
    path: PathBuf,
    writer: SerializedFileWriter<File>,
    columns: Vec<Column>,
    rows: usize,
}

impl Table {
    fn create(path: &Path, schema: &str) -> Result<Table, FleetError> {
        let parquet_error = |source| FleetError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        let schema = Arc::new(parse_message_type(schema).map_err(parquet_error)?);
        let columns = schema
            .get_fields()
            .iter()
            .map(|field| Column::for_field(field))
            .collect();
        let file = File::create(path).map_err(|source| FleetError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let properties = WriterProperties::builder()
            .set_created_by(format!("depsetfs {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer =
            SerializedFileWriter::new(file, schema, Arc::new(properties)).map_err(parquet_error)?;
        Ok(Table {
            path: path.to_path_buf(),
            writer,
            columns,
            rows: 0,
        })
    }

    /// Called after each row: writes the row group once it is full (then true).
    fn row_done(&mut self) -> Result<bool, FleetError> {
        self.rows += 1;
        if self.rows >= ROWS_PER_GROUP {
            self.flush()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn flush(&mut self) -> Result<(), FleetError> {
        if self.rows == 0 {
            return Ok(());
        }
        let error = |source| FleetError::Parquet {
            path: self.path.clone(),
            source,
        };
        let mut group = self.writer.next_row_group().map_err(error)?;
        for column in &self.columns {
            let Some(mut writer) = group.next_column().map_err(error)? else {
                break;
            };
            match column {
                Column::Int64(v) => writer.typed::<Int64Type>().write_batch(v, None, None),
                Column::Int32(v) => writer.typed::<Int32Type>().write_batch(v, None, None),
                Column::Bool(v) => writer.typed::<BoolType>().write_batch(v, None, None),
                Column::Text(v) => writer.typed::<ByteArrayType>().write_batch(v, None, None),
                Column::OptionalText(v, levels) => {
                    writer
                        .typed::<ByteArrayType>()
                        .write_batch(v, Some(levels), None)
                }
            }
            .map_err(error)?;
            writer.close().map_err(error)?;
        }
        group.close().map_err(error)?;
        for column in &mut self.columns {
            column.clear();
        }
        self.rows = 0;
        Ok(())
    }

    fn close(mut self) -> Result<(), FleetError> {
        self.flush()?;
        let path = self.path.clone();
        self.writer
            .close()
            .map(|_| ())
            .map_err(|source| FleetError::Parquet { path, source })
    }
}

fn text(value: impl Into<Vec<u8>>) -> ByteArray {
    ByteArray::from(value.into())
}

/// Text of bytes that should be UTF-8 (paths are shown lossily, like everywhere in JSON).
fn lossy(bytes: &[u8]) -> ByteArray {
    text(String::from_utf8_lossy(bytes).into_owned())
}

/// Writes one row per access record of `records` (read from the log whose header is `header`)
/// to `path`; returns the number of rows. The process image of each access is the `exe` of the
/// last process record of its (pid, start) before it in the log.
pub fn write_accesses(
    header: &LogHeader,
    label: &str,
    records: impl Iterator<Item = Result<Record, LogError>>,
    path: &Path,
) -> Result<u64, FleetError> {
    let mut table = Table::create(path, ACCESS_SCHEMA)?;
    let mut strings = Strings::default();
    let mut rows = 0u64;
    let mut context = RowContext::new(header, label);
    for record in records {
        if let Some(Record::Access(access)) = context.read(record?) {
            let row = AccessRow {
                host: strings.get(context.host.data()),
                label: strings.get(context.label.data()),
                exe: context.exe(access.pid, access.start),
                access: &access,
            };
            push_access(&mut table.columns, row, &mut strings);
            if table.row_done()? {
                strings.clear();
            }
            rows += 1;
        }
    }
    table.close()?;
    Ok(rows)
}

/// The cells of an access row that are not the record's own.
struct AccessRow<'a> {
    host: ByteArray,
    label: ByteArray,
    exe: ByteArray,
    access: &'a Access,
}

/// Text cells seen in the current row group, each stored once and shared (a `ByteArray` clone
/// is a reference count): most cells repeat (host, label, op, kind, the hot paths).
#[derive(Default)]
struct Strings {
    known: HashMap<Vec<u8>, ByteArray>,
    intents: HashMap<u32, ByteArray>,
}

impl Strings {
    fn get(&mut self, bytes: &[u8]) -> ByteArray {
        if let Some(known) = self.known.get(bytes) {
            return known.clone();
        }
        let value = lossy(bytes);
        self.known.insert(bytes.to_vec(), value.clone());
        value
    }

    fn intent(&mut self, bits: u32) -> ByteArray {
        self.intents
            .entry(bits)
            .or_insert_with(|| text(intent::names(bits).join(",")))
            .clone()
    }

    /// Forgets the row group's strings: memory stays bounded by one row group.
    fn clear(&mut self) {
        self.known.clear();
    }
}

fn push_access(columns: &mut [Column], row: AccessRow<'_>, strings: &mut Strings) {
    let access = row.access;
    let values: [Value; 16] = [
        Value::Int64(access.first_ns as i64),
        Value::Int64(access.last_ns as i64),
        Value::Text(row.host),
        Value::Text(row.label),
        Value::Int64(i64::from(access.pid)),
        Value::Int64(access.start as i64),
        Value::Text(row.exe),
        Value::Text(strings.get(access.op.name().as_bytes())),
        Value::Text(strings.get(&access.path)),
        Value::OptionalText(access.target.as_deref().map(|t| strings.get(t))),
        Value::Text(strings.get(access.kind.name().as_bytes())),
        Value::Text(strings.intent(access.intent)),
        Value::Int32(access.errno),
        Value::Bool(access.succeeded()),
        Value::Int64(access.count as i64),
        Value::Int64(access.bytes as i64),
    ];
    for (value, column) in values.into_iter().zip(columns.iter_mut()) {
        value.push(column);
    }
}

/// One cell, pushed onto the column of its type.
enum Value {
    Int64(i64),
    Int32(i32),
    Bool(bool),
    Text(ByteArray),
    OptionalText(Option<ByteArray>),
}

impl Value {
    fn push(self, column: &mut Column) {
        match (self, column) {
            (Value::Int64(x), Column::Int64(v)) => v.push(x),
            (Value::Int32(x), Column::Int32(v)) => v.push(x),
            (Value::Bool(x), Column::Bool(v)) => v.push(x),
            (Value::Text(x), Column::Text(v)) => v.push(x),
            (Value::OptionalText(x), Column::OptionalText(v, levels)) => match x {
                Some(x) => {
                    v.push(x);
                    levels.push(1);
                }
                None => levels.push(0),
            },
            // The schemas above and the columns of their writers are written together.
            _ => debug_assert!(false, "a value of another type than its column"),
        }
    }
}

/// Writes one row per network record (connect, bind, listen, accept; not `traced`) of
/// `records` to `path`, with the process image as in [`write_accesses`].
pub fn write_net(
    header: &LogHeader,
    label: &str,
    records: impl Iterator<Item = Result<Record, LogError>>,
    path: &Path,
) -> Result<u64, FleetError> {
    let mut table = Table::create(path, NET_SCHEMA)?;
    let mut rows = 0u64;
    let mut context = RowContext::new(header, label);
    for record in records {
        match context.read(record?) {
            Some(Record::Net(event)) if event.call != NetCall::Traced => {
                let values = [
                    Value::Int64(event.ts_ns as i64),
                    Value::Text(context.host.clone()),
                    Value::Text(context.label.clone()),
                    Value::Int64(i64::from(event.pid)),
                    Value::Int64(event.start as i64),
                    Value::Text(context.exe(event.pid, event.start)),
                    Value::Text(text(event.call.name())),
                    Value::Text(text(event.family.name())),
                    Value::Text(text(event.address.as_str())),
                    Value::OptionalText(event.socket_type.as_deref().map(text)),
                ];
                for (value, column) in values.into_iter().zip(table.columns.iter_mut()) {
                    value.push(column);
                }
                table.row_done()?;
                rows += 1;
            }
            _ => {}
        }
    }
    table.close()?;
    Ok(rows)
}

/// Writes one row per path of `set` (computed with `strategy`) to `path`.
pub fn write_set(
    header: &LogHeader,
    label: &str,
    strategy: &str,
    set: &DeploymentSet,
    path: &Path,
) -> Result<u64, FleetError> {
    let mut table = Table::create(path, SET_SCHEMA)?;
    let (host, label) = run_names(header, None, label);
    for entry in &set.entries {
        let values = [
            Value::Text(host.clone()),
            Value::Text(label.clone()),
            Value::Text(text(strategy)),
            Value::Text(lossy(&entry.path)),
            Value::Text(text(entry.kind.name())),
            Value::Int64(entry.size as i64),
            Value::Text(text(entry.reason.name())),
            Value::Int64(entry.users.len() as i64),
        ];
        for (value, column) in values.into_iter().zip(table.columns.iter_mut()) {
            value.push(column);
        }
        table.row_done()?;
    }
    table.close()?;
    Ok(set.entries.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn schemas_parse() {
        for schema in [ACCESS_SCHEMA, NET_SCHEMA, SET_SCHEMA] {
            parse_message_type(schema).expect("a valid schema");
        }
    }

    #[test]
    fn accesses_are_written_one_row_each_with_their_image() {
        let dir = crate::fixtures::ScratchDir::new("fleet");
        let path = dir.file("web.parquet");
        // A log older than labels: the label is the file stem the caller gives.
        let mut header = crate::fixtures::records::header();
        header.label = None;
        let id = crate::analysis::graph::uses::ProcessId {
            run: 0,
            pid: 7,
            start: 1,
        };
        let info = crate::fixtures::process(id, "/usr/sbin/nginx", &["nginx"], 1);
        let mut records = vec![Ok(info)];
        for _ in 0..3 {
            let mut access = crate::fixtures::records::access(7, b"/etc/nginx/nginx.conf");
            access.start = 1;
            records.push(Ok(Record::Access(access)));
        }
        let rows = write_accesses(&header, "web", records.into_iter(), &path).expect("written");
        assert_eq!(rows, 3);
        let reader = SerializedFileReader::new(File::open(&path).expect("open")).expect("read");
        assert_eq!(reader.metadata().file_metadata().num_rows(), 3);
        let first = reader.get_row_iter(None).expect("rows").next();
        let row = first.expect("a row").expect("decoded").to_string();
        assert!(row.contains("exe: \"/usr/sbin/nginx\""), "{row}");
        assert!(row.contains("label: \"web\""), "{row}");
    }

    #[test]
    fn a_merged_logs_rows_carry_their_runs_host_and_label() {
        let dir = crate::fixtures::ScratchDir::new("fleet-merged");
        let path = dir.file("app.parquet");
        let mut header = crate::fixtures::records::header();
        header.label = Some("app".to_string());
        for (host, label) in [("web", Some("front")), ("db", None)] {
            let mut run = crate::fixtures::records::header();
            run.host = host.to_string();
            run.label = label.map(str::to_string);
            header.runs.push(run);
        }
        let mut records = Vec::new();
        for index in 0..2 {
            records.push(Ok(Record::Run(crate::record::RunSegment { index })));
            let mut access = crate::fixtures::records::access(7, b"/etc/hosts");
            access.start = 1;
            records.push(Ok(Record::Access(access)));
        }
        let rows = write_accesses(&header, "app", records.into_iter(), &path).expect("written");
        assert_eq!(rows, 2);
        let reader = SerializedFileReader::new(File::open(&path).expect("open")).expect("read");
        let rows: Vec<String> = reader
            .get_row_iter(None)
            .expect("rows")
            .map(|row| row.expect("decoded").to_string())
            .collect();
        assert!(
            rows[0].contains("host: \"web\", label: \"front\""),
            "{rows:?}"
        );
        assert!(
            rows[1].contains("host: \"db\", label: \"app#2\""),
            "{rows:?}"
        );
    }
}
