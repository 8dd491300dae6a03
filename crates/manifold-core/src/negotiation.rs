//! The server-driven offer/answer state of one room-protocol participant: publications
//! waiting for an m-line, tracks waiting to be received, the outstanding offer, and what
//! every m-line is for. Owned by the participant; `room_session.rs` acts on it.

use manifold_api::command::Publication;
use manifold_api::protocol::MidInfo;
use str0m::change::SdpPendingOffer;
use str0m::media::Mid;

use crate::keys::TKey;

pub(crate) struct PendingPublication {
    pub publication: Publication,
    /// The m-line offered for it, once offered.
    pub mid: Option<Mid>,
}

pub(crate) struct PendingOffer {
    pub id: u64,
    pub offer: SdpPendingOffer,
    /// The ufrag an ICE restart in this offer replaces (unindexed once answered).
    pub old_ufrag: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The data channel.
    Data,
    /// The client publishes on it.
    Send,
    /// The client receives on it: the slot's index.
    Receive(usize),
    /// Retired.
    Dead,
}

pub(crate) struct Line {
    pub mid: Mid,
    pub kind: &'static str,
    pub role: Role,
}

/// The server-driven offer/answer state of one room participant.
#[derive(Default)]
pub(crate) struct Negotiation {
    pub pending: Option<PendingOffer>,
    pub next_offer_id: u64,
    pub dirty: bool,
    pub ice_restart: bool,
    pub publications: Vec<PendingPublication>,
    /// Tracks to receive that have no m-line yet.
    pub wanted: Vec<TKey>,
    /// Published m-lines to make inactive (their tracks are gone).
    pub retiring: Vec<Mid>,
    pub lines: Vec<Line>,
    /// The outstanding offer as sent, for a client that resumes and may have missed it.
    pub last_offer: Option<(u64, String, Vec<MidInfo>)>,
}

impl Negotiation {
    /// The state right after the first offer (made off the media thread) went out.
    pub fn started(
        offer: Option<SdpPendingOffer>,
        sdp: &str,
        mids: Vec<MidInfo>,
        data_mid: Option<Mid>,
    ) -> Self {
        let mut neg = Negotiation {
            next_offer_id: 2,
            ..Default::default()
        };
        if let Some(offer) = offer {
            neg.pending = Some(PendingOffer {
                id: 1,
                offer,
                old_ufrag: None,
            });
            neg.last_offer = Some((1, sdp.to_owned(), mids));
        }
        if let Some(mid) = data_mid {
            neg.lines.push(Line {
                mid,
                kind: "application",
                role: Role::Data,
            });
        }
        neg
    }

    /// Publications asked for but not live yet.
    pub fn pending_publications(&self) -> usize {
        self.publications.len()
    }

    /// Queue a track to receive.
    pub fn want(&mut self, tk: TKey) {
        if !self.wanted.contains(&tk) {
            self.wanted.push(tk);
            self.dirty = true;
        }
    }

    /// Forget a track that went away before it got an m-line.
    pub fn unwant(&mut self, tk: TKey) -> bool {
        let before = self.wanted.len();
        self.wanted.retain(|t| *t != tk);
        before != self.wanted.len()
    }

    /// A published m-line must become inactive.
    pub fn retire(&mut self, mid: Mid) {
        self.retiring.push(mid);
        self.dirty = true;
    }

    /// Something changed that needs an offer.
    pub fn touch(&mut self) {
        self.dirty = true;
    }
}
