//! Private network namespaces for tests that need addresses loopback cannot give: a host with
//! several addresses on one interface, a whole IPv6 /64, two hosts joined by a veth pair.
//! Nothing here can reach the machine's own network: a namespace starts with nothing but a
//! down loopback, and only what the test adds exists in it.
//!
//! Namespaces need root (CAP_SYS_ADMIN) and `ip` from iproute2. Where those are missing,
//! [`NetNs::create`] says so and returns None, and the test returns early, except under CI
//! (`CI` set), where a missing capability is a failure: CI runs as root, so a skip there would
//! hide a test that never ran.

use std::os::fd::AsRawFd;
use std::process::Command;

/// A network namespace, deleted when dropped.
pub struct NetNs {
    pub name: String,
}

/// Runs `ip ARGS`, panicking with its error output if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// A fresh namespace with loopback up, named after `tag` and this process; None (and a
    /// line on stderr) where namespaces cannot be made here and this is not CI.
    pub fn create(tag: &str) -> Option<NetNs> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "turnd-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let made = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !made {
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot create a network namespace (root and iproute2 are needed); CI must run this test"
            );
            eprintln!("skipped: cannot create a network namespace here (needs root and iproute2)");
            return None;
        }
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv6.ip_nonlocal_bind` = 1, so sockets
    /// can bind any address of a prefix routed `local` to loopback).
    pub fn sysctl(&self, key: &str, value: &str) {
        let out = self
            .command("sysctl")
            .args(["-qw", &format!("{key}={value}")])
            .output()
            .expect("sysctl runs");
        assert!(
            out.status.success(),
            "sysctl {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Routes a whole prefix (e.g. `2001:db8:64::/64`) to the namespace's loopback, so every
    /// address in it is local and can be bound: one host with as many addresses as a test wants.
    pub fn local_prefix(&self, cidr: &str) {
        let family = if cidr.contains(':') { "-6" } else { "-4" };
        self.ip(&[family, "route", "add", "local", cidr, "dev", "lo"]);
        self.sysctl(
            if cidr.contains(':') {
                "net.ipv6.ip_nonlocal_bind"
            } else {
                "net.ipv4.ip_nonlocal_bind"
            },
            "1",
        );
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it makes, and threads it
    /// spawns (an in-process turnd's workers and HTTP runtime), live in the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.name))
            .expect("the namespace's file");
        std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd changes only this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the namespaced thread")
    }

    /// Joins two namespaces with a veth pair named `a_dev` (in `a`) and `b_dev` (in `b`), both
    /// up, with no addresses yet.
    pub fn veth(a: &NetNs, a_dev: &str, b: &NetNs, b_dev: &str) {
        ip(&[
            "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
            &b.name,
        ]);
        a.ip(&["link", "set", a_dev, "up"]);
        b.ip(&["link", "set", b_dev, "up"]);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
