//! Giving back what only the start needed, once a daemon is up: the pages of code and constants
//! used once (argument parsing, the YAML reader, age, the config checks) and the heap freed
//! since.
//!
//! A process's RSS counts the pages mapped into it. The kernel maps code in 64 KiB blocks around
//! each page fault, so after the start most of the binary's code is mapped although an idle
//! supervisor runs a small part of it. `MADV_DONTNEED` on a read-only file mapping unmaps
//! its pages from this process only: they stay in the page cache, and the code that runs later
//! faults its pages back in (a minor fault, no disk read). Mappings that were ever written (a
//! private copy of a page, e.g. a text relocation or a debugger's breakpoint) are left alone, so
//! nothing written is ever thrown away. `malloc_trim` returns the heap's free pages.

use std::fs;

use restinpieces_litestream::status::{State, Status};
use tokio::sync::watch;

/// Gives the start-up pages back the first time litestream is ready (the start, the first
/// polls and the fresh-database guard are over by then), then ends.
pub(crate) async fn after_ready(mut status: watch::Receiver<Status>) {
    if status.wait_for(|s| s.state == State::Ready).await.is_ok() {
        let _ = tokio::task::spawn_blocking(give_back_start_up_pages).await;
    }
}

/// Unmaps the pages of every clean, read-only file mapping (our binary's code and constants,
/// and the shared libraries') and trims the heap. Errors are ignored: this only saves memory.
pub(crate) fn give_back_start_up_pages() {
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in clean_code_mappings(&smaps) {
        // SAFETY: the range is a whole private, read-only file mapping of this
        // process with no private (written) page: dropping its pages only makes the next access
        // read them again from the file, unchanged; no memory is freed that Rust owns.
        unsafe {
            nix::libc::madvise(
                start as *mut nix::libc::c_void,
                end - start,
                nix::libc::MADV_DONTNEED,
            );
        }
    }
    // SAFETY: malloc_trim only returns free heap memory to the kernel; it is thread-safe.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// `(start, end)` of each `r-xp` or `r--p` file mapping in `/proc/self/smaps` text whose
/// `Anonymous:` (pages copied on write) is 0 kB. A mapping made read-only after it was written
/// (RELRO: relocated pointers) has private copies, so it is never chosen.
fn clean_code_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            let perms = words.next().unwrap_or("");
            let _offset = words.next();
            let _dev = words.next();
            let inode = words.next().unwrap_or("0");
            current = match (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                (Ok(a), Ok(b)) if matches!(perms, "r-xp" | "r--p") && inode != "0" => Some((a, b)),
                _ => None,
            };
        } else if first == "Anonymous:" {
            if let Some(range) = current.take() {
                if words.next() == Some("0") {
                    out.push(range);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_chosen() {
        let smaps = "\
55d0a000-55d0b000 r--p 00000000 fd:01 123 /bin/x
Anonymous:             0 kB
55d0b000-55d0f000 r-xp 00001000 fd:01 123 /bin/x
Rss:                  16 kB
Anonymous:             0 kB
55d0f000-55d10000 r-xp 00005000 fd:01 124 /lib/written
Anonymous:             4 kB
7ffd0000-7ffd1000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f000000-7f001000 rw-p 00000000 00:00 0
Anonymous:             4 kB
";
        assert_eq!(
            clean_code_mappings(smaps),
            vec![(0x55d0a000, 0x55d0b000), (0x55d0b000, 0x55d0f000)]
        );
    }

    #[test]
    fn the_pages_given_back_come_back_when_run() {
        give_back_start_up_pages();
        // Code and libc still work afterwards.
        assert_eq!(format!("{}", 6 * 7), "42");
        assert!(!clean_code_mappings(&fs::read_to_string("/proc/self/smaps").unwrap()).is_empty());
    }
}
