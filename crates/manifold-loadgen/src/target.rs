//! What the load runs against: the signaling of one kind of server. Every target turns
//! "publisher `i` of room `r`" and "a subscriber of that publisher" into a negotiated client
//! ([`Joined`]) and a [`Session`] to end later; the media engine does not care which.
//!
//! Targets: any WHIP + WHEP server (URL templates), the Janus VideoRoom plugin over the
//! Janus HTTP API, and Manifold's own room protocol.

use std::net::IpAddr;
use std::time::Duration;

use crate::janus::Janus;
use crate::room::{RoomSession, RoomTarget};
use crate::signal::{self, Joined, MediaSpec, SignalError};

/// How long one join may take (HTTP exchanges included) before it counts as a timeout.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// A server to load.
pub enum Target {
    /// WHIP for publishers, WHEP for subscribers.
    WhipWhep(WhipWhep),
    /// Janus VideoRoom over HTTP.
    Janus(Janus),
    /// Manifold's room protocol over a WebSocket.
    Room(RoomTarget),
}

/// A publisher as subscribers need to name it.
#[derive(Clone, Debug)]
pub struct PublisherRef {
    /// Room index in the scenario.
    pub room: usize,
    /// Publisher index in its room.
    pub index: usize,
    /// Name given to the server (WHIP identity, Janus display name).
    pub name: String,
    /// The server's own id for the publisher (Janus feed id).
    pub feed: Option<u64>,
    /// Its track ids (room protocol).
    pub tracks: Vec<String>,
}

/// A joined session, to end when the client leaves.
#[derive(Clone, Debug)]
pub enum Session {
    /// A WHIP/WHEP resource URL (DELETE ends it).
    Http(String),
    /// A Janus plugin handle (detach ends it).
    Janus(u64),
    /// A room-protocol socket (leave ends it).
    Room(RoomSession),
}

/// WHIP and WHEP endpoints as URL templates: `{room}` becomes the room name and
/// `{publisher}` the publisher's name (so a server that plays one named publisher per WHEP
/// URL, as Manifold's `/whep/{room}/{publisher}` does, can be loaded with many per room).
#[derive(Clone, Debug)]
pub struct WhipWhep {
    /// e.g. `http://127.0.0.1:8080/whip/{room}?identity={publisher}`
    pub whip: String,
    /// e.g. `http://127.0.0.1:8080/whep/{room}/{publisher}`
    pub whep: String,
    /// Bearer token, if the server wants one.
    pub token: Option<String>,
    /// Prefix of room names (`<prefix><index>`).
    pub room_prefix: String,
    http: reqwest::Client,
}

impl WhipWhep {
    /// Endpoints from templates.
    pub fn new(whip: String, whep: String, token: Option<String>, room_prefix: String) -> Self {
        WhipWhep {
            whip,
            whep,
            token,
            room_prefix,
            http: reqwest::Client::builder()
                .timeout(JOIN_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    fn url(&self, template: &str, room: usize, publisher: &str) -> String {
        template
            .replace("{room}", &format!("{}{room}", self.room_prefix))
            .replace("{publisher}", publisher)
    }
}

impl Target {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Target::WhipWhep(_) => "whip-whep",
            Target::Janus(_) => "janus",
            Target::Room(_) => "room",
        }
    }

    /// Get ready for `rooms` rooms of up to `publishers` publishers each (Janus creates
    /// its session and rooms here).
    pub async fn prepare(&self, rooms: usize, publishers: usize) -> Result<(), SignalError> {
        match self {
            Target::WhipWhep(_) | Target::Room(_) => Ok(()),
            Target::Janus(j) => j.prepare(rooms, publishers).await,
        }
    }

    /// Join publisher `index` of room `room`, its video in simulcast `layers` (RIDs, lowest
    /// first; WHIP only) unless that is empty.
    pub async fn publish(
        &self,
        room: usize,
        index: usize,
        spec: MediaSpec,
        layers: &[&str],
        bind_ip: IpAddr,
    ) -> Result<(Joined, Session, PublisherRef), SignalError> {
        let name = format!("r{room}-p{index}");
        if !layers.is_empty() && !matches!(self, Target::WhipWhep(_)) {
            return Err(SignalError::Protocol(format!(
                "simulcast publishing is for WHIP, not {}",
                self.name()
            )));
        }
        match self {
            Target::WhipWhep(w) => {
                let url = w.url(&w.whip, room, &name);
                let offering =
                    signal::Offering::with_layers(bind_ip, signal::Offer::Send(spec), layers)?;
                let joined = timed(signal::post_offer(
                    &w.http,
                    &url,
                    w.token.as_deref(),
                    offering,
                ))
                .await?;
                let session = Session::Http(joined.resource.clone());
                let publisher = PublisherRef {
                    room,
                    index,
                    name,
                    feed: None,
                    tracks: Vec::new(),
                };
                Ok((joined, session, publisher))
            }
            Target::Room(r) => {
                let (joined, session, tracks) =
                    timed(r.publish(room, &name, spec, bind_ip)).await?;
                let publisher = PublisherRef {
                    room,
                    index,
                    name,
                    feed: None,
                    tracks,
                };
                Ok((joined, Session::Room(session), publisher))
            }
            Target::Janus(j) => {
                let (joined, handle, feed) = timed(j.publish(room, &name, spec, bind_ip)).await?;
                let publisher = PublisherRef {
                    room,
                    index,
                    name,
                    feed: Some(feed),
                    tracks: Vec::new(),
                };
                Ok((joined, Session::Janus(handle), publisher))
            }
        }
    }

    /// Join a subscriber of `publisher`, receiving `media` (what the scenario publishes).
    pub async fn subscribe(
        &self,
        publisher: &PublisherRef,
        media: MediaSpec,
        bind_ip: IpAddr,
    ) -> Result<(Joined, Session), SignalError> {
        match self {
            Target::WhipWhep(w) => {
                let url = w.url(&w.whep, publisher.room, &publisher.name);
                let joined = timed(signal::join_with(
                    &w.http,
                    &url,
                    w.token.as_deref(),
                    bind_ip,
                    signal::Offer::Receive(media),
                ))
                .await?;
                let session = Session::Http(joined.resource.clone());
                Ok((joined, session))
            }
            Target::Janus(j) => {
                let feed = publisher
                    .feed
                    .ok_or_else(|| SignalError::Protocol("publisher without a feed id".into()))?;
                let (joined, handle) = timed(j.subscribe(publisher.room, feed, bind_ip)).await?;
                Ok((joined, Session::Janus(handle)))
            }
            Target::Room(r) => {
                let name = format!("{}-s{:08x}", publisher.name, rand::random::<u32>());
                let (joined, session) =
                    timed(r.subscribe(publisher.room, &name, &publisher.tracks, bind_ip)).await?;
                Ok((joined, Session::Room(session)))
            }
        }
    }

    /// End a session.
    pub async fn leave(&self, session: &Session) -> Result<(), SignalError> {
        match (self, session) {
            (Target::WhipWhep(w), Session::Http(url)) => {
                timed(signal::leave(&w.http, url, w.token.as_deref())).await
            }
            (Target::Janus(j), Session::Janus(handle)) => timed(j.detach(*handle)).await,
            (Target::Room(_), Session::Room(session)) => {
                session.leave();
                Ok(())
            }
            _ => Err(SignalError::Protocol("session of another target".into())),
        }
    }

    /// Clean up what [`Target::prepare`] made.
    pub async fn finish(&self) {
        if let Target::Janus(j) = self {
            j.finish().await;
        }
    }
}

async fn timed<T>(f: impl Future<Output = Result<T, SignalError>>) -> Result<T, SignalError> {
    tokio::time::timeout(JOIN_TIMEOUT, f)
        .await
        .unwrap_or(Err(SignalError::Timeout))
}

/// Is `url`'s host a loopback address (127.0.0.0/8, ::1, localhost)? The loadgen sends
/// traffic to nothing else.
pub fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_pass() {
        for ok in [
            "http://127.0.0.1:8080/whip/{room}",
            "http://127.0.0.2/janus",
            "http://localhost:1/x",
            "http://[::1]:8080/whep",
            "https://user@127.9.9.9/",
        ] {
            assert!(is_loopback_url(ok), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/whip",
            "http://example.com/",
            "http://127.0.0.1.example.com/",
            "ftp://127.0.0.1/",
            "http://[2001:db8::1]/",
            "127.0.0.1:8080",
        ] {
            assert!(!is_loopback_url(bad), "{bad}");
        }
    }

    #[test]
    fn templates_name_rooms_and_publishers() {
        let w = WhipWhep::new(
            "http://127.0.0.1:1/whip/{room}?identity={publisher}".into(),
            "http://127.0.0.1:1/whep/{room}/{publisher}".into(),
            None,
            "lg".into(),
        );
        assert_eq!(
            w.url(&w.whip, 3, "r3-p1"),
            "http://127.0.0.1:1/whip/lg3?identity=r3-p1"
        );
        assert_eq!(
            w.url(&w.whep, 0, "r0-p0"),
            "http://127.0.0.1:1/whep/lg0/r0-p0"
        );
    }
}
