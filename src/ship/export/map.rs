//! `export --map OLD=NEW`: moving a host means editing the files that name it, and this does
//! it in the exported copy only (the source tree is only ever read). Each text file of the set
//! (no NUL byte, at most [`MAX_TEXT_BYTES`]) is searched for every OLD as a whole token (the
//! rule of [`crate::ship::host_refs::find_token`]), all mappings at once, so `a=b` and `b=c`
//! swap nothing twice; a file with a match is handed to the format as an anonymous memory file
//! with the new contents (owner, mode and times of the source file kept), and each rewritten
//! line is reported as `path:line`. The walker ([`super::walk`]) asks [`apply`] for every item
//! while [`with_mappings`] is active on its thread: a scoped setting rather than another
//! parameter through every format writer (dir, tar, OCI), which stay unchanged.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::PathBuf;

use serde::Serialize;

use super::ExportError;
use super::walk::{Body, Item};
use crate::ship::host_refs::{MAX_TEXT_BYTES, find_token};

/// One `--map OLD=NEW`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub old: String,
    pub new: String,
}

/// `OLD=NEW`: both non-empty and without white space.
pub fn parse_mapping(text: &str) -> Result<Mapping, String> {
    let bad = || format!("not OLD=NEW (a host name or address and its new value): {text:?}");
    let (old, new) = text.split_once('=').ok_or_else(bad)?;
    let plain = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    if !plain(old) || !plain(new) {
        return Err(bad());
    }
    Ok(Mapping {
        old: old.to_owned(),
        new: new.to_owned(),
    })
}

/// One rewritten line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    pub path: String,
    /// 1-based.
    pub line: u64,
    pub old: String,
    pub new: String,
}

impl Rewrite {
    pub fn describe(&self) -> String {
        format!("{}:{}: {} -> {}", self.path, self.line, self.old, self.new)
    }
}

struct Active {
    mappings: Vec<Mapping>,
    done: Vec<Rewrite>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
}

/// Runs `export` with `mappings` applied to every item the walker reads on this thread, and
/// returns its result with the rewrites made.
pub fn with_mappings<T>(mappings: &[Mapping], export: impl FnOnce() -> T) -> (T, Vec<Rewrite>) {
    if mappings.is_empty() {
        return (export(), Vec::new());
    }
    ACTIVE.with(|active| {
        *active.borrow_mut() = Some(Active {
            mappings: mappings.to_vec(),
            done: Vec::new(),
        })
    });
    let result = export();
    let done = ACTIVE.with(|active| active.borrow_mut().take().map(|a| a.done));
    (result, done.unwrap_or_default())
}

/// The item with its contents rewritten, when mappings are active and it is a text file
/// naming an OLD.
pub fn apply(item: Item) -> Result<Item, ExportError> {
    let Body::File { mut file, size } = item.body else {
        return Ok(item);
    };
    let mappings = ACTIVE.with(|active| active.borrow().as_ref().map(|a| a.mappings.clone()));
    let Some(mappings) = mappings.filter(|_| size <= MAX_TEXT_BYTES) else {
        return Ok(Item {
            body: Body::File { file, size },
            ..item
        });
    };
    let path = String::from_utf8_lossy(&item.path).into_owned();
    let read_error = |source| ExportError::Read {
        path: PathBuf::from(&path),
        action: "read (for --map)",
        source,
    };
    let mut content = Vec::new();
    (&mut file)
        .take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(read_error)?;
    file.rewind().map_err(read_error)?;
    let rewritten = (!content.contains(&0))
        .then(|| rewrite(&content, &mappings))
        .flatten();
    let Some((new_content, lines)) = rewritten else {
        return Ok(Item {
            body: Body::File { file, size },
            ..item
        });
    };
    let memory = memory_file(&new_content).map_err(|source| ExportError::Write {
        path: PathBuf::from(format!("memfd:{path}")),
        action: "hold the rewritten file",
        source,
    })?;
    ACTIVE.with(|active| {
        if let Some(active) = active.borrow_mut().as_mut() {
            active
                .done
                .extend(lines.into_iter().map(|(line, old, new)| Rewrite {
                    path: path.clone(),
                    line,
                    old,
                    new,
                }));
        }
    });
    Ok(Item {
        body: Body::File {
            file: memory,
            size: new_content.len() as u64,
        },
        ..item
    })
}

/// The mappings that rewrote nothing (worth a warning: a typo, or a name no file uses).
pub fn unused<'a>(mappings: &'a [Mapping], done: &[Rewrite]) -> Vec<&'a Mapping> {
    mappings
        .iter()
        .filter(|mapping| !done.iter().any(|rewrite| rewrite.old == mapping.old))
        .collect()
}

fn memory_file(content: &[u8]) -> io::Result<File> {
    super::stub::memory_file(content)
}

/// A rewritten line: (line number, old, new).
pub type LineRewrite = (u64, String, String);

/// `content` with every mapping's OLD (as a whole token) replaced by its NEW, and the
/// (line, old, new) of each replacement; None when nothing matched. Matches are taken left to
/// right; where two mappings match at one place the longer OLD wins.
pub fn rewrite(content: &[u8], mappings: &[Mapping]) -> Option<(Vec<u8>, Vec<LineRewrite>)> {
    let mut matches: Vec<(usize, usize)> = Vec::new(); // (offset, mapping)
    for (index, mapping) in mappings.iter().enumerate() {
        let mut from = 0;
        while let Some(at) = find_token(content, mapping.old.as_bytes(), from) {
            matches.push((at, index));
            from = at + mapping.old.len();
        }
    }
    if matches.is_empty() {
        return None;
    }
    matches.sort_by_key(|&(at, index)| (at, std::cmp::Reverse(mappings[index].old.len())));
    let mut out = Vec::with_capacity(content.len());
    let mut lines = Vec::new();
    let mut copied = 0;
    let mut line = 1u64;
    let mut counted = 0;
    for (at, index) in matches {
        if at < copied {
            continue;
        }
        let mapping = &mappings[index];
        line += content[counted..at].iter().filter(|&&b| b == b'\n').count() as u64;
        counted = at;
        out.extend_from_slice(&content[copied..at]);
        out.extend_from_slice(mapping.new.as_bytes());
        copied = at + mapping.old.len();
        lines.push((line, mapping.old.clone(), mapping.new.clone()));
    }
    out.extend_from_slice(&content[copied..]);
    Some((out, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> Mapping {
        parse_mapping(text).expect("a mapping")
    }

    #[test]
    fn mappings_are_old_equals_new() {
        assert_eq!(
            parse_mapping("10.0.0.2=10.9.0.2"),
            Ok(Mapping {
                old: "10.0.0.2".to_owned(),
                new: "10.9.0.2".to_owned()
            })
        );
        for bad in ["", "=", "a=", "=b", "a b=c", "nothing"] {
            assert!(parse_mapping(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn whole_tokens_are_rewritten_with_their_lines() {
        let content = b"a = 10.0.0.2\nb = 10.0.0.25\nc = db:3306 mydb 10.0.0.2\n";
        let (new, lines) =
            rewrite(content, &[map("10.0.0.2=10.9.0.2"), map("db=db2")]).expect("rewritten");
        assert_eq!(
            String::from_utf8_lossy(&new),
            "a = 10.9.0.2\nb = 10.0.0.25\nc = db2:3306 mydb 10.9.0.2\n"
        );
        let numbers: Vec<u64> = lines.iter().map(|l| l.0).collect();
        assert_eq!(numbers, vec![1, 3, 3]);
        assert!(rewrite(b"nothing here", &[map("db=x")]).is_none());
    }

    #[test]
    fn mappings_apply_at_once_not_in_a_chain() {
        let (new, _) = rewrite(b"a b", &[map("a=b"), map("b=a")]).expect("rewritten");
        assert_eq!(new, b"b a");
    }
}
