//! `manifold admin …` against a running server: tables, `--json`, a token minted from the
//! configured key, and HTTP errors as messages with a non-zero exit code.

mod common;

use std::process::{Command, Output};

use common::{Server, token};

const KEY: &str = "admin-cli-test-key-0123456789abcdef";

fn admin(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_manifold"))
        .arg("admin")
        .args(["--url", &server.base])
        .args(args)
        .env_remove("MANIFOLD_TOKEN")
        .env_remove("MANIFOLD_URL")
        .output()
        .expect("run manifold admin")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn admin_cli() {
    let server = Server::start(&[], &[("MANIFOLD_AUTH__KEY", KEY)]);
    let tok = token(KEY, "ops", None, &["admin"]);
    let user = token(KEY, "u", None, &["publish", "subscribe"]);
    let t = ["--token", tok.as_str()];

    let o = admin(
        &server,
        &[
            &t[..],
            &[
                "create-room",
                "cli-room",
                "--max-participants",
                "3",
                "--metadata",
                r#"{"topic":"x"}"#,
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("created cli-room"), "{o:?}");

    // A token minted from the key (--auth-key, as from --config).
    let o = admin(&server, &["--auth-key", KEY, "rooms"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).starts_with("ROOM"), "{o:?}");

    let o = admin(
        &server,
        &[&t[..], &["participants", "cli-room", "--json"]].concat(),
    );
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!(v["participants"], serde_json::json!([]));

    let o = admin(
        &server,
        &[&t[..], &["log-level", "info,manifold_core=debug"]].concat(),
    );
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("manifold_core=debug"), "{o:?}");

    // HTTP errors: the server's message, exit 1.
    let o = admin(
        &server,
        &[&t[..], &["participants", "nobody-here"]].concat(),
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("404 not_found"),
        "{o:?}"
    );
    let o = admin(&server, &["--token", &user, "rooms"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("403 forbidden"),
        "{o:?}"
    );
    let o = admin(
        &server,
        &[&t[..], &["kick", "cli-room", "p0000000000000001"]].concat(),
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");

    let o = admin(&server, &[&t[..], &["close", "cli-room"]].concat());
    assert!(o.status.success(), "{o:?}");
    let o = admin(&server, &[&t[..], &["drain"]].concat());
    assert!(
        o.status.success() && stdout(&o).contains("draining"),
        "{o:?}"
    );

    // No server: exit 2.
    let o = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args([
            "admin",
            "--url",
            "http://127.0.0.1:1",
            "--token",
            &tok,
            "rooms",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}
