//! The few Linux facilities the benchmark measures with: CPU affinity, a process's CPU time and
//! resident memory, a socket's drop counter, and sending a run of datagrams in one call.

use std::io;
use std::os::fd::RawFd;

/// Pins the calling thread to the given CPUs (the load gets one core, the server the other).
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit set; CPU_ZERO/CPU_SET only write inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the open-file limit: 10,000 allocations need 10,000 client sockets here, and the
/// servers (started from this process) inherit the limit for their relay sockets.
pub fn raise_file_limit(want: u64) {
    let lim = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: setrlimit reads a live rlimit.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            let mut cur: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
            cur.rlim_cur = cur.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &cur);
        }
    }
}

/// CPU time a process has spent, user and system, over all its threads, in nanoseconds
/// (the scheduler's own accounting in /proc/PID/task/*/schedstat: exact, unlike the 10 ms
/// ticks of /proc/PID/stat). Threads that have exited are not counted, so measure over a
/// window in which the server's threads stay the same.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Resident memory of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Datagrams the kernel dropped on arrival at this socket because its receive buffer was
/// full (SO_MEMINFO's SK_MEMINFO_DROPS). The saturation runs count delivery this way, so the
/// load generator spends nothing reading what the server relayed.
pub fn socket_drops(fd: RawFd) -> u64 {
    const SK_MEMINFO_VARS: usize = 9;
    const SK_MEMINFO_DROPS: usize = 8;
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        u64::from(info[SK_MEMINFO_DROPS])
    } else {
        0
    }
}

/// Sets a socket's receive buffer, past net.core.rmem_max when running as root.
pub fn set_recv_buffer(fd: RawFd, bytes: usize) {
    let v = bytes as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads a live c_int.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// CPU time the whole machine spent busy, all cores, in nanoseconds: user + nice + system +
/// irq + softirq from the `cpu` line of /proc/stat (idle, iowait and steal left out). This is
/// the only account that sees work wherever it runs: an XDP program on a veth runs in the
/// softirq of whichever CPU transmitted the frame, in no process's time. Its unit is the
/// kernel's clock tick (USER_HZ, 10 ms), so windows must be long enough to hold many ticks.
pub fn machine_busy_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let ticks = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum::<u64>();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * (1_000_000_000 / hz)
}
