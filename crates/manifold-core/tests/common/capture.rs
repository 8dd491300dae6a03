//! Seed capture for the fuzz corpora: with `MANIFOLD_CAPTURE_DIR` set, the test clients
//! write what they put on the wire (datagrams, SDP, payloads, room-protocol messages) into
//! `<dir>/<kind>/<hash>`; `scripts/fuzz.sh seeds` picks the corpora from there. Without the
//! variable this does nothing. Shared by the core's harness and the real-server tests
//! (which include this file by path).

use std::path::PathBuf;
use std::sync::OnceLock;

/// Keep `bytes` as an example of `kind`, if capturing.
pub fn capture(kind: &str, bytes: &[u8]) {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    let Some(dir) = DIR.get_or_init(|| std::env::var_os("MANIFOLD_CAPTURE_DIR").map(PathBuf::from))
    else {
        return;
    };
    let dir = dir.join(kind);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    // FNV-1a: identical examples land in one file.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let _ = std::fs::write(dir.join(format!("{hash:016x}")), bytes);
}
