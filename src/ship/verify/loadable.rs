//! The "nothing broken on arrival" check of an exported root: every dynamically linked ELF
//! file in it (executables and shared objects) must load there. The real check is the dynamic
//! loader's own: for each such file, `LOADER --list FILE` runs chrooted into the root with an
//! empty environment, the loader being the one the file names (`PT_INTERP`), or, for a shared
//! object that names none, the one the export's executables of the same class and machine use.
//! The loader resolves `DT_NEEDED` through the root's `ld.so.cache`, `RUNPATH` and default
//! directories exactly as a program started there would, and stops at the first library it
//! cannot find. A file whose loader is not in the root cannot load either. A shared object whose
//! missing library is in the root all the same, in a directory the loader does not search (the
//! JDK's `lib/libjava.so` needs `lib/server/libjvm.so`), is a plugin that its program loads after
//! that library, and is not reported. Static files, object
//! files, the stub program and files of a class or byte order this reader does not parse are
//! not checked. `--list` maps and lists, it runs none of the file's code.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A file of the root that would not load there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unloadable {
    /// Path inside the root.
    pub path: Vec<u8>,
    /// What is missing: a library, or the loader itself.
    pub missing: String,
}

impl Unloadable {
    /// "would not load: /usr/bin/x (missing libfoo.so.1)".
    pub fn describe(&self) -> String {
        format!(
            "would not load: {} (missing {})",
            String::from_utf8_lossy(&self.path),
            self.missing
        )
    }
}

/// What the check needs from one ELF file's headers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ElfFacts {
    /// (EI_CLASS, e_machine): which loader can load it.
    family: (u8, u16),
    /// `PT_INTERP`, the loader it names.
    interpreter: Option<Vec<u8>>,
}

/// Every dynamically linked ELF file under `root` that the loader cannot load there (its
/// loader missing from the root counts too).
pub fn unloadable_files(root: &Path) -> io::Result<Vec<Unloadable>> {
    let mut elves = BTreeMap::new();
    collect(root, root, &mut elves)?;
    let mut loaders: BTreeMap<(u8, u16), Vec<u8>> = BTreeMap::new();
    for facts in elves.values() {
        if let Some(interpreter) = &facts.interpreter {
            loaders
                .entry(facts.family)
                .or_insert_with(|| interpreter.clone());
        }
    }
    let mut broken = Vec::new();
    for (path, facts) in &elves {
        let Some(loader) = facts
            .interpreter
            .as_ref()
            .or_else(|| loaders.get(&facts.family))
        else {
            continue;
        };
        if let Some(missing) = list_in_root(root, loader, path)? {
            if facts.interpreter.is_none() && provided_in_root(&elves, &missing) {
                // A plugin library (libjava.so needing libjvm.so from lib/server/): it is
                // loaded by a program that has loaded the library first, which is in the root.
                continue;
            }
            broken.push(Unloadable {
                path: path.clone(),
                missing,
            });
        }
    }
    Ok(broken)
}

/// Whether a shared object named `library` (a file name, as `DT_NEEDED` says it) is among the
/// root's ELF files, in any directory.
fn provided_in_root(elves: &BTreeMap<Vec<u8>, ElfFacts>, library: &str) -> bool {
    elves
        .keys()
        .any(|path| path.rsplit(|&b| b == b'/').next() == Some(library.as_bytes()))
}

/// Runs `loader --list file` chrooted in `root`; the library it could not find, if any.
fn list_in_root(root: &Path, loader: &[u8], file: &[u8]) -> io::Result<Option<String>> {
    let root_c = std::ffi::CString::new(root.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut command = Command::new(std::ffi::OsStr::from_bytes(loader));
    command
        .arg("--list")
        .arg(OsString::from(std::ffi::OsStr::from_bytes(file)))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: chroot and chdir are async-signal-safe; the path was made before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::chroot(root_c.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = match command.output() {
        Ok(output) => output,
        // The chrooted exec of the loader failed: it is not in the root (or not runnable).
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Ok(Some(format!(
                "its loader {}",
                String::from_utf8_lossy(loader)
            )));
        }
        Err(error) => return Err(error),
    };
    if output.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&output.stderr);
    Ok(Some(missing_library(&text).unwrap_or_else(|| {
        let first = text.lines().next().unwrap_or("").trim();
        format!("a library: the loader says {first:?}")
    })))
}

/// The library named in "FILE: error while loading shared libraries: LIB: cannot open ...".
fn missing_library(stderr: &str) -> Option<String> {
    const MARK: &str = "error while loading shared libraries: ";
    let rest = &stderr[stderr.find(MARK)? + MARK.len()..];
    let library = rest.split(':').next()?.trim();
    (!library.is_empty()).then(|| library.to_string())
}

/// Every regular file under `dir` (not following symlinks) that is a dynamically linked ELF
/// file, keyed by its path inside the root.
fn collect(root: &Path, dir: &Path, found: &mut BTreeMap<Vec<u8>, ElfFacts>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            collect(root, &path, found)?;
        } else if kind.is_file()
            && let Some(facts) = elf_facts(&path)?
        {
            let inside = Path::new("/").join(path.strip_prefix(root).unwrap_or(&path));
            found.insert(inside.into_os_string().into_encoded_bytes(), facts);
        }
    }
    Ok(())
}

/// The headers of a little-endian ELF file with a `PT_DYNAMIC` segment; None for anything
/// else (not ELF, static, relocatable, big-endian, unreadable headers).
fn elf_facts(path: &PathBuf) -> io::Result<Option<ElfFacts>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => return Ok(None),
        Err(error) => return Err(error),
    };
    // The ELF and program headers are nearly always in the first page.
    let mut head = Vec::new();
    file.by_ref().take(4096).read_to_end(&mut head)?;
    Ok(parse_elf(&head, &mut file))
}

fn parse_elf(head: &[u8], file: &mut std::fs::File) -> Option<ElfFacts> {
    if head.len() < 52 || &head[..4] != b"\x7fELF" || head[5] != 1 {
        return None;
    }
    let class = head[4];
    let u16_at = |at: usize| Some(u16::from_le_bytes(head.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?));
    let e_type = u16_at(16)?;
    if e_type != 2 && e_type != 3 {
        return None;
    }
    let machine = u16_at(18)?;
    let (phoff, phentsize, phnum) = match class {
        1 => (u64::from(u32_at(28)?), u16_at(42)?, u16_at(44)?),
        2 => (u64_at(32)?, u16_at(54)?, u16_at(56)?),
        _ => return None,
    };
    let mut dynamic = false;
    let mut interpreter = None;
    for index in 0..u64::from(phnum) {
        let at = usize::try_from(phoff + index * u64::from(phentsize)).ok()?;
        let p_type = u32_at(at)?;
        let (offset, size) = match class {
            1 => (u64::from(u32_at(at + 4)?), u64::from(u32_at(at + 16)?)),
            _ => (u64_at(at + 8)?, u64_at(at + 32)?),
        };
        match p_type {
            2 => dynamic = true,
            3 => interpreter = read_at(head, file, offset, size.min(4096)),
            _ => {}
        }
    }
    if !dynamic {
        return None;
    }
    let interpreter = interpreter.map(|mut text| {
        if let Some(nul) = text.iter().position(|&byte| byte == 0) {
            text.truncate(nul);
        }
        text
    });
    Some(ElfFacts {
        family: (class, machine),
        interpreter,
    })
}

/// `size` bytes at `offset`: from the head when they are in it, else from the file.
fn read_at(head: &[u8], file: &mut std::fs::File, offset: u64, size: u64) -> Option<Vec<u8>> {
    let (start, len) = (usize::try_from(offset).ok()?, usize::try_from(size).ok()?);
    if let Some(bytes) = head.get(start..start.checked_add(len)?) {
        return Some(bytes.to_vec());
    }
    let mut bytes = vec![0; len];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, offset).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_found_anywhere_in_the_root_counts_as_provided() {
        let facts = ElfFacts {
            family: (2, 62),
            interpreter: None,
        };
        let elves = BTreeMap::from([(b"/usr/lib/jvm/java/lib/server/libjvm.so".to_vec(), facts)]);
        assert!(provided_in_root(&elves, "libjvm.so"));
        assert!(!provided_in_root(&elves, "libjvm.so.1"));
        assert!(!provided_in_root(&elves, "server/libjvm.so"));
    }

    #[test]
    fn the_missing_library_is_read_from_the_loader_message() {
        let text = "/bin/ls: error while loading shared libraries: libselinux.so.1: cannot open shared object file: No such file or directory\n";
        assert_eq!(missing_library(text).as_deref(), Some("libselinux.so.1"));
        assert_eq!(missing_library("something else"), None);
    }

    /// A root with the host's loader and `ls` but none of its libraries: `ls` would not load;
    /// without the loader either, that is what is missing. (Needs root, for chroot.)
    #[test]
    fn a_binary_without_its_libraries_or_its_loader_would_not_load() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let ls = std::fs::canonicalize("/usr/bin/ls").unwrap();
        let facts = elf_facts(&ls).unwrap().unwrap();
        let loader = facts.interpreter.unwrap();
        let root =
            std::env::temp_dir().join(format!("depsetfs-loadable-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let inside = |path: &[u8]| root.join(std::ffi::OsStr::from_bytes(&path[1..]));
        std::fs::create_dir_all(inside(b"/usr/bin")).unwrap();
        std::fs::copy(&ls, inside(b"/usr/bin/ls")).unwrap();
        let without_loader = unloadable_files(&root).unwrap();
        let loader_in_root = inside(&loader);
        std::fs::create_dir_all(loader_in_root.parent().unwrap()).unwrap();
        std::fs::copy(std::ffi::OsStr::from_bytes(&loader), &loader_in_root).unwrap();
        let without_libraries = unloadable_files(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(without_loader.len(), 1, "{without_loader:?}");
        assert!(
            without_loader[0].missing.starts_with("its loader"),
            "{without_loader:?}"
        );
        assert_eq!(without_libraries.len(), 1, "{without_libraries:?}");
        assert_eq!(without_libraries[0].path, b"/usr/bin/ls");
        assert!(
            without_libraries[0].missing.contains(".so"),
            "{without_libraries:?}"
        );
        assert!(
            without_libraries[0]
                .describe()
                .starts_with("would not load: /usr/bin/ls (missing lib"),
            "{}",
            without_libraries[0].describe()
        );
    }

    #[test]
    fn a_dynamic_executable_names_its_loader_and_the_stub_is_not_checked() {
        let ls = PathBuf::from("/usr/bin/ls");
        let facts = elf_facts(&ls).unwrap().expect("ls is a dynamic ELF file");
        assert!(
            facts
                .interpreter
                .as_deref()
                .is_some_and(|loader| loader.starts_with(b"/lib")),
            "{facts:?}"
        );
        let stub = std::env::temp_dir().join(format!("depsetfs-loadable-{}", std::process::id()));
        std::fs::write(&stub, crate::ship::export::stub::exit0_elf().unwrap()).unwrap();
        let parsed = elf_facts(&stub).unwrap();
        std::fs::remove_file(&stub).unwrap();
        assert_eq!(parsed, None, "a static file is not checked");
    }
}
