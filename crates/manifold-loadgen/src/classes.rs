//! Subscribers summed up by downlink class (their cap, or `uncapped`): what each class
//! received against what its link carries, its loss, freezes and layer switches per minute,
//! and which layer it mostly saw. The figures behind bench scenario (d).
//!
//! Every figure covers each subscriber's whole time receiving media (its first media
//! packet to its last), adaptation at the start included.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::downlink::class_name;
use crate::hist::{Histogram, Quantiles};
use crate::snapshot::ClientReport;

/// One class of subscribers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClassSummary {
    /// `300k`, `1m`, `uncapped`.
    pub class: String,
    /// The cap, bits per second.
    pub cap_bps: Option<u64>,
    /// Subscribers in the class that received media.
    pub subscribers: u64,
    /// Their time receiving media, summed, minutes.
    pub media_minutes: f64,
    /// UDP bitrate received (past the cap), kbit/s: mean, lowest, highest over the class.
    pub received_kbps: f64,
    /// Lowest of the class.
    pub received_kbps_min: f64,
    /// Highest of the class.
    pub received_kbps_max: f64,
    /// Of it, RTP payloads of media packets, kbit/s (mean): the rest is headers, RTCP,
    /// padding (bandwidth probes) and retransmissions.
    pub media_kbps: f64,
    /// `received_kbps` as a share of the cap, %.
    pub utilisation_pct: Option<f64>,
    /// Datagrams the cap dropped at its queue's tail, % of those that reached it.
    pub link_drop_pct: Option<f64>,
    /// Video packets never received, retransmissions counted, % of those expected (from
    /// the sequence numbers, first to highest received).
    pub video_loss_pct: f64,
    /// Audio packets never received, %.
    pub audio_loss_pct: f64,
    /// Video packets' send-to-receive latency over the class, milliseconds: the queue
    /// behind a cap shows here.
    pub video_latency_ms: Quantiles,
    /// Audio packets' send-to-receive latency over the class, milliseconds.
    pub audio_latency_ms: Quantiles,
    /// Complete video frames shown per second.
    pub fps: f64,
    /// Freezes (no new complete frame for more than 500 ms) per minute.
    pub freezes_per_min: f64,
    /// Share of the time frozen, %.
    pub frozen_pct: f64,
    /// Layer switches per minute.
    pub layer_switches_per_min: f64,
    /// The layer with the most frames over the class (`<width>x<height>`).
    pub layer_mostly: Option<String>,
    /// Share of the class's frames per layer, %.
    pub layer_share_pct: BTreeMap<String, f64>,
    /// How many subscribers ended on each layer (`none`: no keyframe seen).
    pub ending_layers: BTreeMap<String, u64>,
    /// VP8 numbering breaks between adjacent frames, summed.
    pub numbering_breaks: u64,
}

/// The classes of `clients`' subscribers, lowest cap first, uncapped last.
pub fn classes(clients: &[ClientReport]) -> Vec<ClassSummary> {
    let mut by_cap: BTreeMap<(bool, u64), Vec<&ClientReport>> = BTreeMap::new();
    for r in clients
        .iter()
        .filter(|r| r.role == "subscriber" && r.media_s > 0.0)
    {
        let cap = r.downlink.as_ref().map(|d| d.rate_bps);
        by_cap
            .entry((cap.is_none(), cap.unwrap_or(0)))
            .or_default()
            .push(r);
    }
    by_cap
        .into_iter()
        .map(|((uncapped, rate), members)| summarise((!uncapped).then_some(rate), &members))
        .collect()
}

fn summarise(cap: Option<u64>, members: &[&ClientReport]) -> ClassSummary {
    let seconds: f64 = members.iter().map(|r| r.media_s).sum();
    let minutes = seconds / 60.0;
    let kbps: Vec<f64> = members.iter().filter_map(|r| r.received_kbps).collect();
    let mean = kbps.iter().sum::<f64>() / kbps.len().max(1) as f64;
    let media: Vec<f64> = members.iter().filter_map(|r| r.media_kbps).collect();
    let media_mean = media.iter().sum::<f64>() / media.len().max(1) as f64;
    let (mut offered, mut dropped) = (0u64, 0u64);
    let (mut vgaps, mut vgot, mut agaps, mut agot) = (0u64, 0u64, 0u64, 0u64);
    let (mut frames, mut freezes, mut frozen_ms, mut switches, mut breaks) = (0, 0, 0, 0, 0);
    let mut per_layer: BTreeMap<String, u64> = BTreeMap::new();
    let mut ending: BTreeMap<String, u64> = BTreeMap::new();
    let mut latency = Histogram::new();
    let mut audio_latency = Histogram::new();
    for r in members {
        latency.merge(&r.video.latency);
        audio_latency.merge(&r.audio.latency);
        if let Some(d) = &r.downlink {
            offered += d.offered_packets;
            dropped += d.dropped_packets;
        }
        vgaps += r.video.gaps();
        vgot += r.video.unique;
        agaps += r.audio.gaps();
        agot += r.audio.unique;
        let v = &r.video_frames;
        frames += v.frames;
        freezes += v.freezes;
        frozen_ms += v.frozen_ms;
        switches += v.layer_switches;
        breaks += v.numbering_breaks;
        for (layer, l) in &v.layers {
            *per_layer.entry(layer.clone()).or_default() += l.frames;
        }
        let end = v.layer.clone().unwrap_or_else(|| "none".into());
        *ending.entry(end).or_default() += 1;
    }
    let pct = |part: u64, whole: u64| round2(100.0 * part as f64 / whole.max(1) as f64);
    let per_min = |count: u64| {
        if minutes > 0.0 {
            round2(count as f64 / minutes)
        } else {
            0.0
        }
    };
    let total_frames: u64 = per_layer.values().sum();
    ClassSummary {
        class: class_name(cap),
        cap_bps: cap,
        subscribers: members.len() as u64,
        media_minutes: round2(minutes),
        received_kbps: round2(mean),
        received_kbps_min: round2(kbps.iter().copied().reduce(f64::min).unwrap_or(0.0)),
        received_kbps_max: round2(kbps.iter().copied().reduce(f64::max).unwrap_or(0.0)),
        media_kbps: round2(media_mean),
        utilisation_pct: cap.map(|c| round2(100.0 * mean * 1000.0 / c as f64)),
        link_drop_pct: cap.map(|_| pct(dropped, offered)),
        video_loss_pct: pct(vgaps, vgaps + vgot),
        audio_loss_pct: pct(agaps, agaps + agot),
        video_latency_ms: Quantiles::from_us(&latency),
        audio_latency_ms: Quantiles::from_us(&audio_latency),
        fps: if seconds > 0.0 {
            round2(frames as f64 / seconds)
        } else {
            0.0
        },
        freezes_per_min: per_min(freezes),
        frozen_pct: if seconds > 0.0 {
            round2(100.0 * frozen_ms as f64 / 1000.0 / seconds)
        } else {
            0.0
        },
        layer_switches_per_min: per_min(switches),
        layer_mostly: per_layer
            .iter()
            .max_by_key(|(_, f)| **f)
            .map(|(k, _)| k.clone()),
        layer_share_pct: per_layer
            .iter()
            .map(|(k, f)| (k.clone(), pct(*f, total_frames)))
            .collect(),
        ending_layers: ending,
        numbering_breaks: breaks,
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::downlink::DownlinkReport;
    use crate::stamp::Stamp;
    use crate::video::LayerFrames;

    fn subscriber(label: &str, cap: Option<u64>, kbps: f64, layer: &str) -> ClientReport {
        let mut r = ClientReport::new(label.into(), "subscriber");
        r.connected = true;
        r.media_s = 30.0;
        r.received_kbps = Some(kbps);
        r.media_kbps = Some(kbps / 2.0);
        r.downlink = cap.map(|rate_bps| DownlinkReport {
            rate_bps,
            offered_packets: 1000,
            dropped_packets: 50,
            ..DownlinkReport::default()
        });
        let v = &mut r.video_frames;
        v.frames = 900;
        v.freezes = 1;
        v.frozen_ms = 600;
        v.layer_switches = 2;
        v.layer = Some(layer.into());
        v.layers.insert(
            layer.into(),
            LayerFrames {
                frames: 800,
                bytes: 1,
            },
        );
        v.layers.insert(
            "640x360".into(),
            LayerFrames {
                frames: 100,
                bytes: 1,
            },
        );
        // 100 video packets by sequence number, 5 of them missing.
        let t0 = Instant::now();
        for i in (0..100u32).filter(|i| i % 20 != 7) {
            r.video
                // Sent at 0, received 2 ms later.
                .record_index(i, Some(0), t0 + Duration::from_millis(u64::from(i)), 2_000);
        }
        let s = |index| Stamp {
            source: 1,
            index,
            sent_us: 0,
        };
        for i in 0..50 {
            r.audio.record(s(i), t0, 0);
        }
        r
    }

    #[test]
    fn subscribers_are_summed_up_by_cap() {
        let mut silent = subscriber("s", Some(300_000), 0.0, "320x180");
        silent.media_s = 0.0;
        let clients = vec![
            subscriber("u", None, 2000.0, "1280x720"),
            subscriber("a", Some(300_000), 250.0, "320x180"),
            subscriber("b", Some(300_000), 270.0, "320x180"),
            subscriber("m", Some(1_000_000), 700.0, "640x360"),
            silent,
            ClientReport::new("p".into(), "publisher"),
        ];
        let c = classes(&clients);
        let names: Vec<&str> = c.iter().map(|c| c.class.as_str()).collect();
        assert_eq!(names, ["300k", "1m", "uncapped"], "lowest cap first");
        let low = &c[0];
        assert_eq!(low.subscribers, 2, "one that received nothing is left out");
        assert_eq!(low.cap_bps, Some(300_000));
        assert_eq!(low.received_kbps, 260.0);
        assert_eq!(
            (low.received_kbps_min, low.received_kbps_max),
            (250.0, 270.0)
        );
        assert_eq!(low.media_kbps, 130.0);
        assert_eq!(low.utilisation_pct, Some(86.67));
        assert_eq!(low.link_drop_pct, Some(5.0));
        assert_eq!(low.video_loss_pct, 5.0);
        assert_eq!(low.audio_loss_pct, 0.0);
        assert_eq!(low.video_latency_ms.count, 190);
        assert_eq!(low.video_latency_ms.p50, Some(2.0));
        assert_eq!(low.audio_latency_ms.count, 100, "audio has its own latency");
        assert_eq!(low.media_minutes, 1.0);
        assert_eq!(low.fps, 30.0);
        // Two freezes and four switches in one minute; 1.2 s frozen of 60.
        assert_eq!(low.freezes_per_min, 2.0);
        assert_eq!(low.layer_switches_per_min, 4.0);
        assert_eq!(low.frozen_pct, 2.0);
        assert_eq!(low.layer_mostly.as_deref(), Some("320x180"));
        assert_eq!(low.layer_share_pct["320x180"], 88.89);
        assert_eq!(low.ending_layers["320x180"], 2);
        let open = &c[2];
        assert_eq!(
            (open.cap_bps, open.utilisation_pct, open.link_drop_pct),
            (None, None, None)
        );
        assert_eq!(open.layer_mostly.as_deref(), Some("1280x720"));
    }
}
