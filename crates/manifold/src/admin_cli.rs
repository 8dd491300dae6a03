//! `manifold admin …`: the admin API from the command line. Each subcommand is one HTTP
//! call; the answer is printed as a table for people or as it came (`--json`) for scripts.
//! An HTTP error prints the server's message and exits with 1; a call that cannot be made
//! (bad URL, no server, no token) exits with 2.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use manifold_api::{Grants, Identity};
use manifold_control::Auth;
use serde_json::{Value, json};

use crate::ConfigArgs;
use crate::config::{Config, Overrides};

#[derive(Args)]
pub struct AdminArgs {
    /// The server's base URL.
    #[arg(long, env = "MANIFOLD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin token (`manifold token --admin`); without it, one is minted from the
    /// configured key when `--config` or `--auth-key` is given, else none (dev mode).
    #[arg(long, env = "MANIFOLD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the server's JSON answer as it is.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCmd,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// List the cluster's rooms.
    Rooms,
    /// List a room's participants on this node, with their tracks.
    Participants { room: String },
    /// Remove a participant from its room.
    Kick { room: String, id: String },
    /// Mute (or, with --unmute, unmute) a participant's track on the server.
    Mute {
        room: String,
        id: String,
        track: String,
        #[arg(long)]
        unmute: bool,
    },
    /// Close a room on every node.
    Close { room: String },
    /// Make the node take no new session.
    Drain,
    /// Create a room with options.
    CreateRoom {
        room: String,
        #[arg(long)]
        max_participants: Option<u32>,
        /// Seconds it may stay empty.
        #[arg(long)]
        empty_timeout: Option<u64>,
        /// Metadata: JSON, or else taken as a string.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Show the log filter, or set it to LEVEL (e.g. `info,manifold_core=debug`).
    LogLevel { level: Option<String> },
}

pub fn main(args: AdminArgs) -> ExitCode {
    let token = match token(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("manifold admin: {e}");
            return ExitCode::from(2);
        }
    };
    let (method, path, body) = request(&args.command);
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(call(method, &url, token.as_deref(), body)));
    match answer {
        Err(e) => {
            eprintln!("manifold admin: {method} {url}: {e}");
            ExitCode::from(2)
        }
        Ok((status, value)) if !(200..300).contains(&status) => {
            let message = value["message"].as_str().unwrap_or("(no message)");
            let code = value["error"].as_str().unwrap_or("error");
            eprintln!("manifold admin: {method} {path}: {status} {code}: {message}");
            ExitCode::FAILURE
        }
        Ok((_, value)) => {
            if args.json {
                println!("{value}");
            } else {
                print_human(&args.command, &value);
            }
            ExitCode::SUCCESS
        }
    }
}

fn token(args: &AdminArgs) -> Result<Option<String>, String> {
    if let Some(t) = &args.token {
        return Ok(Some(t.clone()));
    }
    if args.config.config.is_none() && args.config.auth_key.is_none() {
        return Ok(None);
    }
    let overrides = Overrides {
        auth_key: args.config.auth_key.clone(),
        ..Default::default()
    };
    let config = Config::load(args.config.config.as_deref(), &overrides)?;
    let auth = Auth::new(config.auth.key.as_deref())?;
    if auth.is_dev() {
        return Ok(None);
    }
    let grants = Grants {
        admin: true,
        ..Default::default()
    };
    let who = Identity::parse("manifold-admin-cli").expect("a valid identity");
    auth.mint(&who, None, grants, None, Duration::from_secs(300))
        .map(Some)
}

fn request(cmd: &AdminCmd) -> (&'static str, String, Option<Value>) {
    match cmd {
        AdminCmd::Rooms => ("GET", "/admin/rooms".into(), None),
        AdminCmd::Participants { room } => {
            ("GET", format!("/admin/rooms/{room}/participants"), None)
        }
        AdminCmd::Kick { room, id } => (
            "DELETE",
            format!("/admin/rooms/{room}/participants/{id}"),
            None,
        ),
        AdminCmd::Mute {
            room,
            id,
            track,
            unmute,
        } => (
            "PATCH",
            format!("/admin/rooms/{room}/participants/{id}/tracks/{track}"),
            Some(json!({ "muted": !unmute })),
        ),
        AdminCmd::Close { room } => ("DELETE", format!("/admin/rooms/{room}"), None),
        AdminCmd::Drain => ("POST", "/admin/drain".into(), None),
        AdminCmd::CreateRoom {
            room,
            max_participants,
            empty_timeout,
            metadata,
        } => {
            let mut body = json!({ "name": room });
            if let Some(n) = max_participants {
                body["max_participants"] = (*n).into();
            }
            if let Some(s) = empty_timeout {
                body["empty_timeout"] = (*s).into();
            }
            if let Some(m) = metadata {
                body["metadata"] =
                    serde_json::from_str(m).unwrap_or_else(|_| Value::String(m.clone()));
            }
            ("POST", "/admin/rooms".into(), Some(body))
        }
        AdminCmd::LogLevel { level: None } => ("GET", "/admin/log-level".into(), None),
        AdminCmd::LogLevel { level: Some(l) } => (
            "PUT",
            "/admin/log-level".into(),
            Some(json!({ "filter": l })),
        ),
    }
}

async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let text = res.text().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn print_human(cmd: &AdminCmd, v: &Value) {
    let empty = Vec::new();
    match cmd {
        AdminCmd::Rooms => {
            println!("{:<32} {:>8} {:>8}  NODES", "ROOM", "HERE", "MEMBERS");
            for r in v["rooms"].as_array().unwrap_or(&empty) {
                let here = r["participants"].as_array().map_or(0, Vec::len);
                let nodes: Vec<&str> = r["nodes"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{:<32} {:>8} {:>8}  {}",
                    text(&r["room"]),
                    here,
                    r["members"],
                    nodes.join(",")
                );
            }
        }
        AdminCmd::Participants { .. } => {
            println!(
                "{:<18} {:<5} {:<24} {:<24} TRACKS",
                "ID", "KIND", "IDENTITY", "NAME"
            );
            for p in v["participants"].as_array().unwrap_or(&empty) {
                let tracks: Vec<String> = p["tracks"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .map(|t| {
                        let muted = if t["muted"] == true { " muted" } else { "" };
                        format!("{} {}{muted}", text(&t["id"]), text(&t["kind"]))
                    })
                    .collect();
                println!(
                    "{:<18} {:<5} {:<24} {:<24} {}",
                    text(&p["id"]),
                    text(&p["kind"]),
                    text(&p["identity"]),
                    text(&p["name"]),
                    tracks.join(", ")
                );
            }
        }
        AdminCmd::Kick { id, .. } => match v["forwarded_to"].as_str() {
            Some(node) => println!("kicked {id} (on node {node})"),
            None => println!("kicked {id}"),
        },
        AdminCmd::Mute { track, .. } => {
            let state = if v["muted"] == true {
                "muted"
            } else {
                "unmuted"
            };
            println!("{track} {state}");
        }
        AdminCmd::Close { room } => println!(
            "closed {room}: {} sessions here, other nodes asked: {}",
            v["closed"],
            v["forwarded_to"].as_array().map_or(0, Vec::len)
        ),
        AdminCmd::Drain => println!("draining; {} sessions still here", v["sessions"]),
        AdminCmd::CreateRoom { room, .. } => {
            println!("created {room}: {}", v["options"]);
        }
        AdminCmd::LogLevel { .. } => println!("{}", text(&v["filter"])),
    }
}

/// A string value as it is, anything else as JSON (`-` for null).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
