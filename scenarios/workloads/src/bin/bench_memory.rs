//! `bench_memory`: a process with a known amount of touched anonymous memory, for `cargo xtask bench engine`.
//!
//! Usage: `bench_memory STATE_DIR BYTES`.
//! It maps BYTES of private anonymous memory and writes a non-zero, position-dependent pattern
//! to every word (so every page is present, and a page restored at the wrong place is caught),
//! writes `STATE_DIR/ready` (the protocol's ready file: its pid, waiting in nanosleep, woken by
//! the check file), then sleeps, polling for `STATE_DIR/check`.
//! When that appears it verifies the whole pattern, writes `STATE_DIR/result` (`ok`, or
//! `fail: ...`) and exits, 0 when ok.
//! With no check after ten minutes it writes a failure and exits, so it never lingers.
//!
//! `bench_memory memcpy BYTES` instead measures this machine's limit for copying memory: the
//! fastest of five copies of BYTES between two buffers whose pages are all present, printed
//! as `memcpy BYTES NANOSECONDS` (what `cargo xtask bench compare` sets the tools against).
//!
//! Self-contained on purpose (std and libc, and the std-only protocol text): what the engine
//! must carry over is just the mapping, the stack, the descriptors std opens and closes, and a
//! sleeping thread. Its arguments are its own (no wait mode: it always sleeps), its files are
//! the protocol's, so `cargo xtask bench` drives it with the same driver as every workload.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crlab_workloads::protocol::{self, Ready, Trigger, WaitMode};

const POLL: Duration = Duration::from_millis(5);
const GIVE_UP: Duration = Duration::from_secs(600);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, bytes] = args.as_slice() {
        if mode == "memcpy" {
            return match bytes.parse::<usize>() {
                Ok(bytes) if bytes > 0 => {
                    let best = memcpy_best_of(bytes, 5);
                    println!("memcpy {bytes} {}", best.as_nanos());
                    ExitCode::SUCCESS
                }
                _ => {
                    eprintln!("bench_memory: memcpy BYTES: {bytes:?} is not a positive number");
                    ExitCode::from(2)
                }
            };
        }
    }
    let (state, bytes, shape) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(msg) => {
            eprintln!(
                "bench_memory: {msg}\nusage: bench_memory STATE_DIR BYTES [threads N | procs N]"
            );
            return ExitCode::from(2);
        }
    };
    match run(&state, bytes, shape) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("bench_memory: {msg}");
            let text = format!("{}{msg}\n", protocol::RESULT_FAIL_PREFIX);
            if let Err(err) = write_atomically(&state, protocol::RESULT, &text) {
                eprintln!("bench_memory: {err}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Besides the main thread and its mapping: extra threads or extra processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Single,
    /// This many threads in all, each with its own small buffer.
    Threads(usize),
    /// This many processes in all: the main one and its children, each with its own buffer.
    Procs(usize),
}

/// Bytes each extra thread or process touches and checks.
const SMALL: usize = 64 * 1024;

fn parse_args(args: &[String]) -> Result<(PathBuf, usize, Shape), String> {
    let (state, bytes, shape) = match args {
        [_, state, bytes] => (state, bytes, Shape::Single),
        [_, state, bytes, kind, n] => {
            let n: usize = n.parse().map_err(|err| format!("N {n:?}: {err}"))?;
            if !(1..=256).contains(&n) {
                return Err(format!("N must be 1..=256, got {n}"));
            }
            let shape = match kind.as_str() {
                "threads" => Shape::Threads(n),
                "procs" => Shape::Procs(n),
                other => return Err(format!("unknown shape {other:?}: threads or procs")),
            };
            (state, bytes, shape)
        }
        _ => {
            return Err(format!(
                "expected 2 or 4 arguments, got {}",
                args.len().saturating_sub(1)
            ))
        }
    };
    let bytes: usize = bytes
        .parse()
        .map_err(|err| format!("BYTES {bytes:?}: {err}"))?;
    if bytes < 8 {
        return Err(format!("BYTES must be at least 8, got {bytes}"));
    }
    Ok((PathBuf::from(state), bytes, shape))
}

/// The fastest of `tries` copies of `bytes` between two buffers whose pages are all present.
fn memcpy_best_of(bytes: usize, tries: usize) -> Duration {
    let mut src = vec![0x5au8; bytes];
    let mut dst = vec![0xa5u8; bytes];
    // Make the source differ from page to page, like a workload's memory.
    for (i, chunk) in src.chunks_mut(4096).enumerate() {
        chunk[0] = i.to_le_bytes()[0];
    }
    let mut best = Duration::MAX;
    for _ in 0..tries {
        let start = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(start.elapsed());
    }
    best
}

/// A small buffer with a pattern of its own (`salt` tells the owners apart).
fn small_buffer(salt: usize) -> Vec<u64> {
    (0..SMALL / 8).map(|i| pattern(i + salt * SMALL)).collect()
}

fn verify_small(buf: &[u64], salt: usize) -> Result<(), String> {
    match buf
        .iter()
        .enumerate()
        .find(|&(i, &w)| w != pattern(i + salt * SMALL))
    {
        None => Ok(()),
        Some((i, _)) => Err(format!("buffer {salt}: word {i} differs")),
    }
}

fn wait_for_check(check: &Path) -> Result<(), String> {
    let start = Instant::now();
    while !check.exists() {
        if start.elapsed() > GIVE_UP {
            return Err(format!(
                "no {} after {GIVE_UP:?}: giving up",
                check.display()
            ));
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

fn run(state: &Path, bytes: usize, shape: Shape) -> Result<(), String> {
    let mut mapping = Mapping::new(bytes)?;
    for (i, word) in mapping.words().iter_mut().enumerate() {
        *word = pattern(i);
    }
    let check = state.join(protocol::CHECK);
    // Children first (before any thread exists), each polling for the check file itself.
    let mut children = Vec::new();
    if let Shape::Procs(n) = shape {
        for salt in 1..n {
            // SAFETY: no other thread exists yet; the child only runs this function's code
            // and leaves with _exit.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(format!("fork: {}", std::io::Error::last_os_error()));
            }
            if pid == 0 {
                let buf = small_buffer(salt);
                let ok = wait_for_check(&check).is_ok()
                    && verify_small(&buf, salt).is_ok()
                    && verify(mapping.words()).is_ok();
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            children.push(pid);
        }
    }
    let mut threads = Vec::new();
    if let Shape::Threads(n) = shape {
        for salt in 1..n {
            let check = check.clone();
            threads.push(std::thread::spawn(move || -> Result<(), String> {
                let buf = small_buffer(salt);
                wait_for_check(&check)?;
                verify_small(&buf, salt)
            }));
        }
    }
    let ready = Ready {
        pid: i32::try_from(std::process::id()).map_err(|_| "pid out of range".to_owned())?,
        wait: WaitMode::Nanosleep,
        trigger: Trigger::CheckFile,
        external_writes: Vec::new(),
        extra: Vec::new(),
    };
    write_atomically(state, protocol::READY, &ready.to_text())?;
    wait_for_check(&check)?;
    verify(mapping.words())?;
    for (i, t) in threads.into_iter().enumerate() {
        t.join()
            .map_err(|_| format!("thread {} panicked", i + 1))??;
    }
    for pid in children {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return Err(format!(
                "waitpid {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(format!("child {pid} failed its check (status {status:#x})"));
        }
    }
    write_atomically(
        state,
        protocol::RESULT,
        &format!("{}\n", protocol::RESULT_OK),
    )
}

fn pattern(i: usize) -> u64 {
    (i as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1
}

fn verify(words: &[u64]) -> Result<(), String> {
    let mut wrong = words
        .iter()
        .enumerate()
        .filter(|&(i, &word)| word != pattern(i));
    let Some((first, &found)) = wrong.next() else {
        return Ok(());
    };
    let more = wrong.count();
    Err(format!(
        "{} of {} words differ; first at byte offset {:#x} (page {}): expected {:#018x}, found {found:#018x}",
        more + 1,
        words.len(),
        first * 8,
        first * 8 / 4096,
        pattern(first),
    ))
}

/// Writes `dir/name` so that it appears whole or not at all.
fn write_atomically(dir: &Path, name: &str, contents: &str) -> Result<(), String> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    std::fs::write(&tmp, contents).map_err(|err| format!("writing {}: {err}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|err| format!("renaming to {}: {err}", path.display()))
}

/// A private anonymous mapping, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    bytes: usize,
}

impl Mapping {
    fn new(bytes: usize) -> Result<Self, String> {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks touches no existing
        // memory; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "mmap of {bytes} bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Self { ptr, bytes })
    }

    fn words(&mut self) -> &mut [u64] {
        // SAFETY: the mapping is readable and writable, page-aligned (so aligned for u64),
        // at least `bytes` long, zero-filled (a valid u64 everywhere), and only reachable
        // through this exclusive borrow of `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u64>(), self.bytes / 8) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `bytes` are exactly what mmap returned and was given, and no slice
        // of the mapping outlives `self`.
        unsafe { libc::munmap(self.ptr, self.bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_never_zero_and_differs_between_neighbours() {
        for i in 0..100_000 {
            assert_ne!(pattern(i), 0);
            assert_ne!(pattern(i), pattern(i + 1));
            assert_ne!(pattern(i), pattern(i + 512), "same value one page apart");
        }
    }

    #[test]
    fn verify_names_the_first_wrong_word() -> Result<(), String> {
        let mut mapping = Mapping::new(3 * 4096)?;
        let words = mapping.words();
        for (i, word) in words.iter_mut().enumerate() {
            *word = pattern(i);
        }
        verify(words)?;
        words[600] = 0;
        words[601] = 0;
        let err = verify(words).err().ok_or("a damaged page passed")?;
        assert!(
            err.starts_with("2 of 1536 words differ; first at byte offset 0x12c0 (page 1)"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn arguments_are_checked() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(parse_args(&args(&["bench_memory", "/tmp/s", "4096"])).is_ok());
        assert!(parse_args(&args(&["bench_memory", "/tmp/s"])).is_err());
        assert!(parse_args(&args(&["bench_memory", "/tmp/s", "lots"])).is_err());
        assert!(parse_args(&args(&["bench_memory", "/tmp/s", "4"])).is_err());
        assert_eq!(
            parse_args(&args(&["bench_memory", "/tmp/s", "4096", "threads", "16"])).map(|p| p.2),
            Ok(Shape::Threads(16))
        );
        assert_eq!(
            parse_args(&args(&["bench_memory", "/tmp/s", "4096", "procs", "10"])).map(|p| p.2),
            Ok(Shape::Procs(10))
        );
        assert!(parse_args(&args(&["bench_memory", "/tmp/s", "4096", "forks", "10"])).is_err());
        assert!(parse_args(&args(&["bench_memory", "/tmp/s", "4096", "threads", "0"])).is_err());
    }
}
