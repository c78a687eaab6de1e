//! Stub programs for `export --stubs`: a binary that a needed process ran without needing it
//! (the exec strategy's stub list) is shipped as a tiny program that exits 0 in its place, so
//! the parent's `execve` still succeeds on the target. The stub is a static ELF executable of
//! the machine's architecture (x86_64 or aarch64), 129 or 132 bytes: one ELF header, one
//! read+execute `PT_LOAD` segment mapping the whole file, and three instructions that call
//! `exit_group(0)`. It needs no interpreter, no library and no shell, so it works in any set,
//! even one without `/bin/sh`; a `#!/bin/sh` script would not. Its contents are handed to the
//! export formats as an anonymous memory file, like any file read from the source.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::FromRawFd;

/// Where the segment is mapped (the traditional base of static executables).
const BASE: u64 = 0x40_0000;
const EHDR_SIZE: u16 = 64;
const PHDR_SIZE: u16 = 56;

/// `exit_group(0)` for the machine this was built for, and its `e_machine`.
fn exit_code() -> Option<(u16, &'static [u8])> {
    if cfg!(target_arch = "x86_64") {
        // xor edi, edi; mov eax, 231 (exit_group); syscall
        Some((62, &[0x31, 0xff, 0xb8, 0xe7, 0, 0, 0, 0x0f, 0x05]))
    } else if cfg!(target_arch = "aarch64") {
        // mov x0, #0; mov x8, #94 (exit_group); svc #0
        Some((
            183,
            &[
                0x00, 0x00, 0x80, 0xd2, 0xc8, 0x0b, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4,
            ],
        ))
    } else {
        None
    }
}

/// The stub's bytes: a static ELF executable that exits with status 0, or None on an
/// architecture without one.
pub fn exit0_elf() -> Option<Vec<u8>> {
    let (machine, code) = exit_code()?;
    let headers = u64::from(EHDR_SIZE + PHDR_SIZE);
    let total = headers + code.len() as u64;
    let mut elf = Vec::with_capacity(total as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI, padding.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE + headers).to_le_bytes()); // e_entry: the code
    elf.extend_from_slice(&u64::from(EHDR_SIZE).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [EHDR_SIZE, PHDR_SIZE, 1, 0, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: read + execute
    for word in [0, BASE, BASE, total, total, 0x1000] {
        // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(code);
    Some(elf)
}

/// An anonymous memory file holding `bytes`, positioned at its start.
pub fn memory_file(bytes: &[u8]) -> io::Result<File> {
    // SAFETY: a valid NUL-terminated name and plain flags.
    let fd = unsafe { libc::memfd_create(c"depsetfs-stub".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    file.rewind()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_stub_is_a_small_static_elf_that_exits_0() {
        let elf = exit0_elf().expect("a stub for this architecture");
        assert!(elf.len() < 140, "{} bytes", elf.len());
        assert_eq!(&elf[..4], b"\x7fELF");
        let dir = std::env::temp_dir().join(format!("depsetfs-stub-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stub");
        std::fs::write(&path, &elf).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // ETXTBSY while another test thread's fork still holds the write descriptor.
        let mut status = None;
        for _ in 0..50 {
            match std::process::Command::new(&path).arg("ignored").status() {
                Ok(done) => {
                    status = Some(done);
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("cannot run the stub: {e}"),
            }
        }
        let status = status.expect("the stub stayed busy");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(status.code(), Some(0));
    }

    #[test]
    fn a_memory_file_reads_back_what_was_written() {
        let mut file = memory_file(b"stub bytes").unwrap();
        let mut back = String::new();
        file.read_to_string(&mut back).unwrap();
        assert_eq!(back, "stub bytes");
    }
}
