//! `turnd serve` as a child process, as an operator runs it: spawn on free loopback ports,
//! wait for /readyz, send signals, read its log, and measure its memory and open files.

use std::process::Command;

/// The secret `spawn_serve` passes, unless a config file is given.
pub const SECRET: &str = "a-long-test-secret";

/// A REST credential for `user`, valid 600 s, minted with the secret `spawn_serve` passes.
pub fn rest(user: &str) -> (String, String) {
    let c = turnd_proto::auth::mint_rest_credential(
        SECRET.as_bytes(),
        user,
        turnd::clock::unix_now(),
        600,
    );
    (c.username, c.password)
}

/// A free loopback port (bound and released; the tiny race is acceptable in a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `turnd serve` on free loopback ports with `extra` arguments: (child, UDP port, HTTP port).
pub fn spawn_serve(extra: &[&str], stderr: std::process::Stdio) -> (std::process::Child, u16, u16) {
    spawn_serve_limited(extra, stderr, None)
}

/// As [`spawn_serve`], with the child's open-file limit set to `nofile` (soft, hard).
pub fn spawn_serve_limited(
    extra: &[&str],
    stderr: std::process::Stdio,
    nofile: Option<(u64, u64)>,
) -> (std::process::Child, u16, u16) {
    spawn_serve_env(extra, stderr, nofile, &[])
}

/// As [`spawn_serve_limited`], with environment variables set for the child (`RUST_LOG`...).
pub fn spawn_serve_env(
    extra: &[&str],
    stderr: std::process::Stdio,
    nofile: Option<(u64, u64)>,
    env: &[(&str, &str)],
) -> (std::process::Child, u16, u16) {
    // A caller that must know the HTTP port beforehand (an ACME CA validating HTTP-01 on it)
    // passes `--http-listen 127.0.0.1:PORT` itself.
    let given_http = extra
        .iter()
        .position(|a| *a == "--http-listen")
        .and_then(|i| extra.get(i + 1)?.rsplit_once(':')?.1.parse().ok());
    // The relay range the child will use (turnd's default unless given): a listen port inside
    // it is a start-up error, and free ports come from the kernel's ephemeral range, which
    // overlaps turnd's default range.
    let relay = extra
        .iter()
        .position(|a| *a == "--relay-ports")
        .and_then(|i| extra.get(i + 1))
        .and_then(|r| r.split_once('-'))
        .and_then(|(lo, hi)| Some(lo.parse::<u16>().ok()?..=hi.parse::<u16>().ok()?))
        .unwrap_or(49152..=65535);
    let outside = || {
        (0..1000)
            .map(|_| free_port())
            .find(|p| !relay.contains(p))
            .expect("a free port outside the relay range")
    };
    let (udp, http) = (outside(), given_http.unwrap_or_else(outside));
    let mut command = Command::new(env!("CARGO_BIN_EXE_turnd"));
    if let Some((soft, hard)) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command.envs(env.iter().copied());
    let child = command
        .args(["serve", "--listen", &format!("127.0.0.1:{udp}")])
        .args(if given_http.is_some() {
            vec![]
        } else {
            vec!["--http-listen".to_owned(), format!("127.0.0.1:{http}")]
        })
        // Off unless the test asks for a metrics listener.
        .args(if extra.contains(&"--metrics-listen") {
            &[][..]
        } else {
            &["--metrics-listen", "off"][..]
        })
        // Never the machine's own address (turnd's default relay address): tests talk to
        // loopback only.
        .args(if extra.contains(&"--relay-ip") {
            &[][..]
        } else {
            &["--relay-ip", "127.0.0.1"][..]
        })
        // Flags win over the file: with a config file, the secret comes from the file alone.
        .args(if extra.contains(&"--config") {
            &[][..]
        } else {
            &["--secret", SECRET][..]
        })
        .args(extra)
        .stderr(stderr)
        .spawn()
        .unwrap();
    (child, udp, http)
}

/// The status `/readyz` answers, if the HTTP service answers at all.
pub fn readyz(http: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    r.split_whitespace().nth(1)?.parse().ok()
}

/// Waits (at most 10 s) until `/readyz` answers 200.
pub fn wait_ready(http: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while readyz(http) != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "turnd never became ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Sends `signal` to the child (our own process).
pub fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// A child's standard error, collected line by line by a thread into the returned string
/// (the thread ends with the child).
pub fn collect_log(stderr: std::process::ChildStderr) -> std::sync::Arc<std::sync::Mutex<String>> {
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    log
}

/// A `turnd serve` child whose log is collected, killed when dropped (a failing test leaves no
/// process behind).
pub struct Served {
    pub child: std::process::Child,
    pub udp: u16,
    pub http: u16,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Served {
    /// Spawns `turnd serve` with `extra` arguments and waits until it is ready.
    pub fn start(extra: &[&str]) -> Served {
        Self::start_limited(extra, None)
    }

    /// As [`Served::start`], with the open-file limit set to `nofile` (soft, hard).
    pub fn start_limited(extra: &[&str], nofile: Option<(u64, u64)>) -> Served {
        Self::start_env(extra, nofile, &[])
    }

    /// As [`Served::start_limited`], with environment variables for the child.
    pub fn start_env(extra: &[&str], nofile: Option<(u64, u64)>, env: &[(&str, &str)]) -> Served {
        let (mut child, udp, http) =
            spawn_serve_env(extra, std::process::Stdio::piped(), nofile, env);
        let log = collect_log(child.stderr.take().unwrap());
        let served = Served {
            child,
            udp,
            http,
            log,
        };
        // As `wait_ready`, but a turnd that never gets ready shows its log.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while readyz(http) != Some(200) {
            assert!(
                std::time::Instant::now() < deadline,
                "turnd never became ready; its log:\n{}",
                served.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        served
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.udp).into()
    }

    pub fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (at most 5 s) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !self.log().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "`{needle}` never logged; log:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Resident memory, KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
