//! The arguments of an execve, read while the call waits for the open of the file it runs.
//! A program that runs for a millisecond can be gone before the proc connector's exec event
//! reaches the details thread, which then finds no /proc entry and records a process without
//! argv or exe. But every exec on the mirror opens its file through the daemon (an open with
//! the kernel's exec flag), and while that open waits for its reply the caller sits inside
//! execve with its old memory intact: `/proc/TID/syscall` names the call and its argument
//! pointers, `/proc/TID/mem` holds the strings. Reading that memory takes the caller's mm
//! lock, which a page fault of another of its threads may hold while it waits for the daemon,
//! so the read runs on its own thread and the request thread waits for it only briefly; a
//! result that arrives after the wait is dropped, since by then the exec may have replaced
//! the memory the pointers point into. The captured argv and exe stand in for /proc when the
//! process is gone before it could be described (see `details`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::Duration;

/// How long a request thread waits for the capture. It takes well under a millisecond; the
/// wait only runs out when the capture thread is stuck on the caller's mm lock (or the
/// machine stalls), and then the exec goes on without a capture rather than waiting.
const CAPTURE_WAIT: Duration = Duration::from_millis(200);
/// At most this many arguments and bytes of them are kept (Linux allows far more).
const MAX_ARGS: usize = 16_384;
const MAX_ARG_BYTES: usize = 1 << 20;
/// Bytes read per step while walking the pointer array and the strings.
const READ_CHUNK: usize = 4096;

/// One execve (or execveat) call: its number and its raw arguments and user stack pointer as
/// /proc/TID/syscall shows them. The several exec opens of one call (the file, a script's
/// interpreter, the ELF interpreter) show the same call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ExecCall {
    number: i64,
    args: [u64; 6],
    stack: u64,
}

impl ExecCall {
    /// The user address of the call's NULL-terminated argv array.
    fn argv_pointer(&self) -> Option<u64> {
        match self.number {
            n if n == libc::SYS_execve => Some(self.args[1]),
            n if n == libc::SYS_execveat => Some(self.args[2]),
            _ => None,
        }
    }
}

/// What an exec was asked to run, for the process `start` identifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ExecCapture {
    pub call: ExecCall,
    /// Start time of the process (clock ticks since boot), to tell a reused pid apart.
    pub start: u64,
    pub argv: Vec<String>,
    /// The mirror path of the file execve was asked to run (for a script, the script).
    pub exe: Vec<u8>,
}

struct CaptureJob {
    tid: u32,
    /// The call captured last for this process: a later open of the same call (the ELF
    /// interpreter) needs no second read.
    previous: Option<ExecCall>,
    reply: Sender<Option<(ExecCall, Vec<String>)>>,
}

/// The capture thread's queue. The thread ends when this is dropped.
pub(super) struct ExecCapturer {
    jobs: Mutex<Option<Sender<CaptureJob>>>,
}

impl ExecCapturer {
    pub fn start() -> ExecCapturer {
        let (jobs, inbox) = mpsc::channel();
        let started = thread::Builder::new()
            .name("depsetfs-exec-args".to_string())
            .spawn(move || serve_captures(inbox))
            .is_ok();
        ExecCapturer {
            jobs: Mutex::new(started.then_some(jobs)),
        }
    }

    /// Captures the exec that thread `tid` is in, whose file is `exe`; None when the thread
    /// is not in an execve, the call was captured before, or the capture did not finish in
    /// time. Call it before the exec open is answered.
    pub fn capture(
        &self,
        tid: u32,
        start: u64,
        exe: &[u8],
        previous: Option<ExecCall>,
    ) -> Option<ExecCapture> {
        let (reply, answer) = mpsc::channel();
        let job = CaptureJob {
            tid,
            previous,
            reply,
        };
        self.jobs.lock().ok()?.as_ref()?.send(job).ok()?;
        let (call, argv) = answer.recv_timeout(CAPTURE_WAIT).ok()??;
        Some(ExecCapture {
            call,
            start,
            argv,
            exe: exe.to_vec(),
        })
    }

    /// Lets the capture thread end.
    pub fn stop(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
    }
}

fn serve_captures(inbox: Receiver<CaptureJob>) {
    while let Ok(job) = inbox.recv() {
        let result = read_exec_call(job.tid)
            .filter(|call| Some(*call) != job.previous)
            .and_then(|call| Some((call, read_argv(job.tid, call.argv_pointer()?).ok()?)));
        // The request thread may have stopped waiting: then nobody wants the result.
        let _ = job.reply.send(result);
    }
}

/// The exec call thread `tid` is blocked in, if it is one.
fn read_exec_call(tid: u32) -> Option<ExecCall> {
    let line = std::fs::read(format!("/proc/{tid}/syscall")).ok()?;
    let call = parse_syscall_line(&line)?;
    call.argv_pointer().map(|_| call)
}

/// Parses /proc/TID/syscall of a thread blocked in a call: "NR ARG1 .. ARG6 SP PC", the
/// arguments and addresses in hex. "running" and "-1 SP PC" (not in a call) give None.
fn parse_syscall_line(line: &[u8]) -> Option<ExecCall> {
    let text = std::str::from_utf8(line).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let number: i64 = fields.next()?.parse().ok()?;
    let mut hex = fields.map(|field| u64::from_str_radix(field.strip_prefix("0x")?, 16).ok());
    let mut args = [0u64; 6];
    for arg in &mut args {
        *arg = hex.next()??;
    }
    let stack = hex.next()??;
    Some(ExecCall {
        number,
        args,
        stack,
    })
}

/// Reads the NULL-terminated array of C strings at `pointer` in the memory of thread `tid`.
fn read_argv(tid: u32, pointer: u64) -> io::Result<Vec<String>> {
    let memory = File::open(format!("/proc/{tid}/mem"))?;
    read_string_array(&memory, pointer)
}

/// Reads a NULL-terminated array of C strings at `pointer` of `memory` (a /proc/PID/mem),
/// within [`MAX_ARGS`] and [`MAX_ARG_BYTES`]; a string cut by the byte limit is kept cut.
fn read_string_array(memory: &File, pointer: u64) -> io::Result<Vec<String>> {
    let mut argv = Vec::new();
    let mut budget = MAX_ARG_BYTES;
    for address in pointers(memory, pointer)? {
        if budget == 0 {
            break;
        }
        let bytes = read_c_string(memory, address, budget)?;
        budget -= bytes.len().min(budget);
        argv.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    Ok(argv)
}

/// The non-NULL pointers of the array at `pointer`, up to [`MAX_ARGS`].
fn pointers(memory: &File, pointer: u64) -> io::Result<Vec<u64>> {
    const WORD: usize = std::mem::size_of::<u64>();
    let mut found = Vec::new();
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut offset = pointer;
    while found.len() < MAX_ARGS {
        let whole = read_some(memory, &mut buffer, offset)? / WORD * WORD;
        if whole == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the argv array ends in the middle of a pointer",
            ));
        }
        for word in buffer[..whole].chunks_exact(WORD) {
            let mut bytes = [0u8; WORD];
            bytes.copy_from_slice(word);
            match u64::from_ne_bytes(bytes) {
                0 => return Ok(found),
                address => found.push(address),
            }
        }
        offset += whole as u64;
    }
    found.truncate(MAX_ARGS);
    Ok(found)
}

/// The bytes of the C string at `address`, without its NUL, at most `limit` of them.
fn read_c_string(memory: &File, address: u64, limit: usize) -> io::Result<Vec<u8>> {
    let mut string = Vec::new();
    let mut buffer = vec![0u8; READ_CHUNK];
    while string.len() < limit {
        let got = read_some(memory, &mut buffer, address + string.len() as u64)?;
        match buffer[..got].iter().position(|&b| b == 0) {
            Some(end) => {
                string.extend_from_slice(&buffer[..end]);
                break;
            }
            None => string.extend_from_slice(&buffer[..got]),
        }
    }
    string.truncate(limit);
    Ok(string)
}

/// One read of at least one word: /proc/PID/mem stops at the end of a mapping (a short
/// read) and fails when nothing at `offset` is mapped.
fn read_some(memory: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    match memory.read_at(buffer, offset)? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the process's memory is gone",
        )),
        got => Ok(got),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn parses_an_execve_line_and_finds_argv() {
        let line = format!(
            "{} 0x55d0a1 0x55d0b2 0x55d0c3 0x0 0x0 0x0 0x7ffc10 0x7f3b20\n",
            libc::SYS_execve
        );
        let call = parse_syscall_line(line.as_bytes()).expect("an execve line");
        assert_eq!(call.argv_pointer(), Some(0x55d0b2));
        assert_eq!(call.stack, 0x7ffc10);
        let at = format!(
            "{} 0xffffff9c 0x55d0a1 0x55d0b2 0x55d0c3 0x0 0x0 0x7ffc10 0x7f3b20",
            libc::SYS_execveat
        );
        let call = parse_syscall_line(at.as_bytes()).expect("an execveat line");
        assert_eq!(call.argv_pointer(), Some(0x55d0b2));
    }

    #[test]
    fn other_calls_and_states_are_not_execs() {
        let open = format!("{} 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8", libc::SYS_openat);
        let call = parse_syscall_line(open.as_bytes()).expect("a call");
        assert_eq!(call.argv_pointer(), None);
        assert_eq!(parse_syscall_line(b"running\n"), None);
        assert_eq!(parse_syscall_line(b"-1 0x7ffc10 0x7f3b20\n"), None);
        assert_eq!(parse_syscall_line(b""), None);
    }

    /// The reader walks a real argv array in this process's own memory.
    #[test]
    fn reads_a_string_array_from_process_memory() {
        let long = "x".repeat(3 * READ_CHUNK + 7);
        let strings: Vec<CString> = ["stat", "-c", "%s", "", "caf\u{e9}", &long]
            .iter()
            .map(|s| CString::new(*s).expect("no NUL"))
            .collect();
        let mut array: Vec<u64> = strings.iter().map(|s| s.as_ptr() as u64).collect();
        array.push(0);
        let memory = File::open("/proc/self/mem").expect("own memory");
        let argv = read_string_array(&memory, array.as_ptr() as u64).expect("readable");
        assert_eq!(argv, ["stat", "-c", "%s", "", "caf\u{e9}", long.as_str()]);
        assert!(
            read_string_array(&memory, 8).is_err(),
            "page 0 is not mapped"
        );
    }

    #[test]
    fn a_thread_outside_execve_gives_no_capture() {
        let capturer = ExecCapturer::start();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        assert_eq!(capturer.capture(tid, 1, b"/bin/x", None), None);
        capturer.stop();
        assert_eq!(capturer.capture(tid, 1, b"/bin/x", None), None, "stopped");
    }
}
