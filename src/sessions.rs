//! `turnd sessions list | kill`: the admin API (`http/admin.rs`) from the command line, as
//! eturnal's `eturnalctl sessions` / `disconnect`. It talks HTTP to a running turnd's metrics
//! listener, so it needs no privileges and works against a remote relay (with its
//! `admin_key`).
//!
//! Exit status: 0 on success, 1 when turnd answered with an error, 2 for bad arguments or
//! when turnd cannot be reached.

use crate::config::{Settings, DEFAULT_METRICS_LISTEN};
use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum SessionsCmd {
    /// List live allocations (all, or one user's), with addresses, age and relayed counters.
    List {
        /// Only this user (REST user id or full username).
        #[arg(long, value_name = "ID")]
        user: Option<String>,
        /// Print the admin API's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// End a user's allocations now, over UDP, TCP and TLS (connections close). Revoke the
    /// user too (`revoke`, then SIGHUP) to keep it from allocating again.
    Kill {
        /// The user (REST user id or full username).
        #[arg(long, value_name = "ID")]
        user: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// Where the admin API is, and its key.
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// Base URL of the admin API [default: http:// + metrics_listen (from --config or
    /// TURND_METRICS_LISTEN), loopback if unspecified].
    #[arg(long, value_name = "URL")]
    admin: Option<String>,
    /// The admin key (sent as `Authorization: Bearer KEY`) [default: admin_key from --config].
    #[arg(long, env = "TURND_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// turnd's configuration file, for metrics_listen and admin_key.
    #[arg(long, env = "TURND_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl AdminTarget {
    /// The base URL and key to use.
    fn resolve(&self) -> Result<(String, Option<String>)> {
        let file = match &self.config {
            Some(p) => Settings::from_file(p)?,
            None => Settings::default(),
        };
        let key = self.admin_key.clone().or(file.admin_key.clone());
        if let Some(url) = &self.admin {
            if !url.starts_with("http://") {
                anyhow::bail!("--admin: `{url}` must be an http:// URL");
            }
            return Ok((url.trim_end_matches('/').to_owned(), key));
        }
        let listen = std::env::var("TURND_METRICS_LISTEN")
            .ok()
            .filter(|v| !v.is_empty())
            .or(file.metrics_listen.clone())
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
        let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
            anyhow!("metrics_listen: `{listen}` is not an ADDRESS:PORT (the admin API is off?)")
        })?;
        let addr = crate::config::as_local_client_reaches(addr);
        Ok((format!("http://{addr}"), key))
    }
}

/// Runs the command; returns the exit status.
pub fn run(cmd: SessionsCmd) -> Result<i32> {
    match cmd {
        SessionsCmd::List { user, json, target } => {
            let (base, key) = target.resolve()?;
            let query = user
                .map(|u| format!("?user={}", encode(&u)))
                .unwrap_or_default();
            let Some(v) = call("GET", &format!("{base}/admin/v1/allocations{query}"), key)? else {
                return Ok(1);
            };
            let out = if json {
                format!("{}\n", serde_json::to_string_pretty(&v)?)
            } else {
                table(&v)
            };
            write_stdout(&out)?;
            Ok(0)
        }
        SessionsCmd::Kill { user, target } => {
            if user.trim().is_empty() {
                anyhow::bail!("--user: must not be empty");
            }
            let (base, key) = target.resolve()?;
            let url = format!("{base}/admin/v1/allocations?user={}", encode(&user));
            let Some(v) = call("DELETE", &url, key)? else {
                return Ok(1);
            };
            write_stdout(&format!(
                "ended {} allocation(s) of {user}\n",
                v["ended"].as_u64().unwrap_or(0)
            ))?;
            Ok(0)
        }
    }
}

/// Prints `out`; a reader that went away (`turnd sessions list | head`) is not an error.
fn write_stdout(out: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// One admin API call: the JSON answer on 200; None (after saying why on stderr) on an error
/// answer.
fn call(method: &str, url: &str, key: Option<String>) -> Result<Option<Value>> {
    let (status, body) = crate::selftest::cli::http_request(method, url, key.as_deref())
        .with_context(|| format!("cannot reach the admin API at {url}"))?;
    let v: Value = serde_json::from_str(&body)
        .with_context(|| format!("the admin API answered {status} with something not JSON"))?;
    if status != 200 {
        let error = v["error"].as_str().unwrap_or("(no message)");
        let hint = match status {
            401 | 403 => " (pass the admin key with --admin-key or TURND_ADMIN_KEY)",
            _ => "",
        };
        eprintln!("turnd: the admin API answered {status}: {error}{hint}");
        return Ok(None);
    }
    Ok(Some(v))
}

/// The allocations as an aligned text table.
fn table(v: &Value) -> String {
    let header = [
        "USER",
        "TRANSPORT",
        "CLIENT",
        "RELAYED",
        "AGE_S",
        "LEFT_S",
        "PERMS",
        "CHANS",
        "TO_PEER_PKTS",
        "TO_PEER_BYTES",
        "TO_CLIENT_PKTS",
        "TO_CLIENT_BYTES",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for a in v["allocations"].as_array().into_iter().flatten() {
        let s = |k: &str| match &a[k] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let relayed: Vec<&str> = a["relayed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        rows.push(vec![
            s("user_id"),
            s("transport"),
            s("client"),
            relayed.join(","),
            s("age_secs"),
            s("lifetime_remaining_secs"),
            s("permissions"),
            s("channels"),
            a["to_peer"]["packets"].to_string(),
            a["to_peer"]["bytes"].to_string(),
            a["to_client"]["packets"].to_string(),
            a["to_client"]["bytes"].to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
