//! The command line, as a user runs it: bad settings exit non-zero naming the key, before
//! anything is bound; `credentials` prints the JSON a client consumes; `check-config` accepts
//! the shipped config/turnd.toml.

use std::process::Command;

fn turnd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args(args)
        .env_remove("TURND_SECRET")
        .output()
        .expect("turnd runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_settings_name_the_key_and_exit_nonzero_before_binding() {
    // Port 1 on loopback would bind fine as root; the error must come first.
    for (args, key) in [
        (
            vec!["serve", "--listen", "127.0.0.1:1", "--relay-ports", "9-3"],
            "relay_ports",
        ),
        (
            vec![
                "serve",
                "--listen",
                "127.0.0.1:1",
                "--allow-peer",
                "10.0.0.0/40",
            ],
            "allow_peer",
        ),
        (vec!["serve", "--listen", "nowhere"], "listen"),
        (
            vec!["serve", "--listen", "127.0.0.1:1", "--log-format", "xml"],
            "log_format",
        ),
        (
            vec!["serve", "--listen", "127.0.0.1:1", "--workers", "0"],
            "workers",
        ),
        (
            vec!["serve", "--listen", "127.0.0.1:1", "--max-ttl", "0"],
            "max_ttl",
        ),
    ] {
        let (code, _, err) = turnd(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(key), "{args:?} must name {key}: {err}");
        assert!(!err.contains("listening"), "nothing was bound: {err}");
    }
    let (code, _, err) = turnd(&["serve", "--user-quota", "lots"]);
    assert_ne!(code, 0);
    assert!(err.contains("--user-quota"), "{err}");
}

#[test]
fn environment_sits_between_flags_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        "listen = [\"127.0.0.1:3478\"]\nrelay_ports = \"oops\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "credentials",
            "--username",
            "u",
            "--config",
            file.to_str().unwrap(),
        ])
        .env("TURND_SECRET", "secret-from-env")
        .env("TURND_RELAY_PORTS", "50000-50010")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "env overrides the file's bad relay_ports: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_turnd"))
        .args([
            "credentials",
            "--username",
            "u",
            "--config",
            file.to_str().unwrap(),
            "--relay-ports",
            "7-1",
        ])
        .env("TURND_SECRET", "secret-from-env")
        .env("TURND_RELAY_PORTS", "50000-50010")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the flag overrides the environment");
}

#[test]
fn credentials_prints_the_rest_shape_verifiable_with_the_secret() {
    let (code, out, err) = turnd(&[
        "credentials",
        "--secret",
        "a-long-secret",
        "--username",
        "alice",
        "--ttl",
        "600",
        "--listen",
        "127.0.0.1:3478",
        "--public-host",
        "relay.example.com",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let username = v["username"].as_str().unwrap();
    let (expiry, id) = turnd_proto::auth::parse_rest_username(username).unwrap();
    assert_eq!(id, "alice");
    assert!(expiry.abs_diff(turnd::clock::unix_now() + 600) <= 5);
    assert_eq!(v["ttl"], 600);
    assert_eq!(
        v["password"],
        turnd_proto::auth::rest_password(b"a-long-secret", username)
    );
    assert_eq!(
        v["uris"],
        serde_json::json!(["turn:relay.example.com:3478?transport=udp"])
    );

    let (code, _, err) = turnd(&["credentials", "--username", "alice"]);
    assert_eq!(code, 2);
    assert!(err.contains("secret"), "{err}");
}

#[test]
fn shipped_config_file_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/turnd.toml");
    let (code, out, err) = turnd(&["check-config", path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"));
    let (code, _, err) = turnd(&["check-config", "/nonexistent.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("nonexistent"), "{err}");
}
