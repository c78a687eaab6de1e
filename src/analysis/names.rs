//! How file names leave depsetfs outside the log and export, without losing a byte. A Linux
//! name is any bytes but `/` and NUL: it may hold a newline, or bytes that are not UTF-8. The
//! text outputs escape it ([`escape`], undone by [`unescape`]): `\\` for a backslash, `\n`,
//! `\t`, `\r`, and `\xNN` for every other control byte and every byte that is not part of valid
//! UTF-8; everything else is written as it is, so an ordinary name reads unchanged. The JSON
//! outputs write a valid UTF-8 name as a string, as before, and any other as an object
//! `{"bytes": [..], "lossy": ".."}` holding the exact bytes ([`JsonName`]). Both forms are
//! described in docs/log-format.md ("Names outside the log").

use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// `name` in the escaped line form: one line, and a different line for every different name.
pub fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buffer = [0; 4];
                    for byte in c.encode_utf8(&mut buffer).bytes() {
                        push_hex(&mut out, byte);
                    }
                }
                c => out.push(c),
            }
        }
        for &byte in chunk.invalid() {
            push_hex(&mut out, byte);
        }
    }
    out
}

fn push_hex(out: &mut String, byte: u8) {
    out.push_str(&format!("\\x{byte:02x}"));
}

/// A line of the escaped form that [`escape`] cannot have written.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad escape at byte {at} of {line:?} (known: \\\\ \\n \\t \\r \\xNN)")]
pub struct BadEscape {
    pub line: String,
    pub at: usize,
}

/// The name an [`escape`]d line stands for.
pub fn unescape(line: &str) -> Result<Vec<u8>, BadEscape> {
    let bytes = line.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    let bad = |at| BadEscape {
        line: line.to_string(),
        at,
    };
    while at < bytes.len() {
        if bytes[at] != b'\\' {
            out.push(bytes[at]);
            at += 1;
            continue;
        }
        let (byte, width) = match bytes.get(at + 1) {
            Some(b'\\') => (b'\\', 2),
            Some(b'n') => (b'\n', 2),
            Some(b't') => (b'\t', 2),
            Some(b'r') => (b'\r', 2),
            Some(b'x') => {
                let hex = bytes.get(at + 2..at + 4).ok_or_else(|| bad(at))?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad(at))?;
                (u8::from_str_radix(hex, 16).map_err(|_| bad(at))?, 4)
            }
            _ => return Err(bad(at)),
        };
        out.push(byte);
        at += width;
    }
    Ok(out)
}

/// A name in a JSON output: a string when it is valid UTF-8, otherwise
/// `{"bytes": [..], "lossy": ".."}` (the exact bytes, and a readable approximation).
#[derive(Clone, Copy, Debug)]
pub struct JsonName<'a>(pub &'a [u8]);

impl Serialize for JsonName<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let mut object = serializer.serialize_struct("Name", 2)?;
                object.serialize_field("bytes", self.0)?;
                object.serialize_field("lossy", &String::from_utf8_lossy(self.0))?;
                object.end()
            }
        }
    }
}

/// An owned name in an answer value: serializes as [`JsonName`], displays [`escape`]d.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameBuf(pub Vec<u8>);

impl NameBuf {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&[u8]> for NameBuf {
    fn from(bytes: &[u8]) -> NameBuf {
        NameBuf(bytes.to_vec())
    }
}

impl Serialize for NameBuf {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        JsonName(&self.0).serialize(serializer)
    }
}

impl fmt::Display for NameBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWKWARD: [&[u8]; 9] = [
        b"/usr/bin/ls",
        b"/srv/caf\xc3\xa9 menu",
        b"/tmp/two\nlines",
        b"/tmp/back\\slash\\n",
        b"/tmp/latin1-caf\xe9",
        b"/tmp/tab\tcr\r",
        b"/tmp/\x01\x7f\xc2\x85",
        b"/tmp/looks-escaped\\x41",
        b"/tmp/\xff\xfe",
    ];

    #[test]
    fn ordinary_names_read_unchanged() {
        assert_eq!(escape(b"/usr/bin/ls"), "/usr/bin/ls");
        assert_eq!(escape("/srv/café menu".as_bytes()), "/srv/café menu");
    }

    #[test]
    fn awkward_bytes_become_one_escaped_line() {
        assert_eq!(escape(b"/tmp/two\nlines"), r"/tmp/two\nlines");
        assert_eq!(escape(b"/tmp/back\\slash"), r"/tmp/back\\slash");
        assert_eq!(escape(b"/tmp/latin1-caf\xe9"), r"/tmp/latin1-caf\xe9");
        assert_eq!(escape(b"/tmp/\x01\x7f\xc2\x85"), r"/tmp/\x01\x7f\xc2\x85");
        for name in AWKWARD {
            let line = escape(name);
            assert!(!line.contains(['\n', '\r', '\0']), "{line:?}");
        }
    }

    #[test]
    fn escaping_round_trips_and_never_merges_two_names() {
        let mut lines = std::collections::BTreeSet::new();
        for name in AWKWARD {
            let line = escape(name);
            assert_eq!(unescape(&line).as_deref(), Ok(name), "{line:?}");
            assert!(lines.insert(line), "two names share a line");
        }
    }

    #[test]
    fn unescape_refuses_what_escape_never_writes() {
        for line in [r"/a\", r"/a\q", r"/a\x4", r"/a\xzz"] {
            assert!(unescape(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn json_names_are_strings_when_utf8_and_exact_bytes_otherwise() -> Result<(), serde_json::Error>
    {
        assert_eq!(
            serde_json::to_value(JsonName("/srv/café".as_bytes()))?,
            serde_json::json!("/srv/café")
        );
        let ff = serde_json::to_value(JsonName(b"/tmp/a\xff"))?;
        let fe = serde_json::to_value(JsonName(b"/tmp/a\xfe"))?;
        assert_eq!(
            ff,
            serde_json::json!({"bytes": [47, 116, 109, 112, 47, 97, 255], "lossy": "/tmp/a\u{fffd}"})
        );
        assert_ne!(ff, fe, "two names differing in invalid bytes collide");
        Ok(())
    }
}
