//! The VP8 payload descriptor (RFC 7741 §4.2) as an SFU reads and rewrites it.
//!
//! A receiver follows one picture numbering (PictureID) and one base-layer index
//! (TL0PICIDX). When a subscription switches source or simulcast layer, or drops a
//! temporal layer's pictures, those numbers would jump; a decoder takes a jump for loss and
//! asks for a keyframe. [`Vp8Rewriter`] keeps one subscription's numbers continuous:
//! every switch continues from the last number sent, and every dropped picture is closed
//! up, also for packets that arrive out of order. [`Vp8Descriptor::parse`] reads the fields
//! and where they are; [`Vp8Descriptor::write`] puts rewritten values in a copy of the
//! payload, same length, nothing else touched. On the packet path the payload is shared by
//! every subscriber and is not copied: the forwarder hands the rewriter's numbers to str0m's
//! `Vp8Patch` on the `RtpWrite`, which patches the bytes while it copies them into the
//! outgoing packet; `write` is the reference the tests and the fuzz target check against.

/// PictureID values are 15 bits (7 in the short form).
const PID_MOD: u16 = 1 << 15;
/// Renumberings remembered for packets that arrive late.
const HISTORY: usize = 16;

/// The fields of a VP8 payload descriptor, and where the rewritable ones are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S: the packet starts a partition.
    pub start_of_partition: bool,
    /// PID: the partition index.
    pub partition_index: u8,
    /// N: the frame is not used as a reference.
    pub non_reference: bool,
    /// PictureID, when present.
    pub picture_id: Option<u16>,
    /// The PictureID field is 15 bits (M set); otherwise 7.
    pub long_picture_id: bool,
    /// TL0PICIDX, when present.
    pub tl0picidx: Option<u8>,
    /// TID (temporal layer), when present.
    pub tid: Option<u8>,
    /// Y: layer sync.
    pub layer_sync: bool,
    /// Descriptor length in bytes (where the VP8 frame data starts).
    pub len: usize,
    picture_id_at: usize,
    tl0picidx_at: usize,
}

impl Vp8Descriptor {
    /// Parse the descriptor at the start of `payload`; `None` when it is truncated.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let mut d = Vp8Descriptor {
            start_of_partition: first & 0x10 != 0,
            partition_index: first & 0x07,
            non_reference: first & 0x20 != 0,
            picture_id: None,
            long_picture_id: false,
            tl0picidx: None,
            tid: None,
            layer_sync: false,
            len: 1,
            picture_id_at: 0,
            tl0picidx_at: 0,
        };
        if first & 0x80 == 0 {
            return Some(d);
        }
        let x = *payload.get(1)?;
        let mut at = 2;
        if x & 0x80 != 0 {
            let b = *payload.get(at)?;
            d.picture_id_at = at;
            if b & 0x80 != 0 {
                let lo = *payload.get(at + 1)?;
                d.picture_id = Some((u16::from(b & 0x7f) << 8) | u16::from(lo));
                d.long_picture_id = true;
                at += 2;
            } else {
                d.picture_id = Some(u16::from(b));
                at += 1;
            }
        }
        if x & 0x40 != 0 {
            d.tl0picidx = Some(*payload.get(at)?);
            d.tl0picidx_at = at;
            at += 1;
        }
        if x & 0x30 != 0 {
            let b = *payload.get(at)?;
            if x & 0x20 != 0 {
                d.tid = Some(b >> 6);
                d.layer_sync = b & 0x20 != 0;
            }
            at += 1;
        }
        d.len = at;
        Some(d)
    }

    /// The first packet of a frame: start of partition 0.
    pub fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition_index == 0
    }

    /// Write `fields` into `payload` (the one this descriptor was parsed from, or a copy):
    /// a PictureID in the field's own width, TL0PICIDX as is. Fields the descriptor does not
    /// carry are left alone.
    pub fn write(&self, payload: &mut [u8], fields: Vp8Fields) {
        if let (Some(_), Some(pid)) = (self.picture_id, fields.picture_id)
            && payload.len() >= self.len
        {
            if self.long_picture_id {
                payload[self.picture_id_at] = 0x80 | ((pid >> 8) as u8 & 0x7f);
                payload[self.picture_id_at + 1] = pid as u8;
            } else {
                payload[self.picture_id_at] = pid as u8 & 0x7f;
            }
        }
        if let (Some(_), Some(tl0)) = (self.tl0picidx, fields.tl0picidx)
            && payload.len() >= self.len
        {
            payload[self.tl0picidx_at] = tl0;
        }
    }
}

/// The numbers a packet goes out with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Fields {
    /// PictureID (15-bit arithmetic; written in the packet's own width).
    pub picture_id: Option<u16>,
    /// TL0PICIDX.
    pub tl0picidx: Option<u8>,
}

/// One subscription's PictureID and TL0PICIDX renumbering. Plain state, no allocation.
#[derive(Clone, Debug)]
pub struct Vp8Rewriter {
    /// From input PictureID `.0` on (in the current source), add `.1`: newest last.
    pid_deltas: [(u16, u16); HISTORY],
    pid_len: usize,
    tl0_delta: u8,
    /// The highest input PictureID seen in the current source.
    highest: Option<u16>,
    /// The last numbers sent.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
    /// The next packet starts a new numbering space (source or layer switch).
    rebase: bool,
    /// The last picture dropped, so a picture's many packets close the gap once.
    dropped: Option<u16>,
}

impl Default for Vp8Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Vp8Rewriter {
    /// A rewriter whose first packet is sent with its own numbers.
    pub fn new() -> Self {
        Vp8Rewriter {
            pid_deltas: [(0, 0); HISTORY],
            pid_len: 0,
            tl0_delta: 0,
            highest: None,
            last_pid: None,
            last_tl0: None,
            rebase: true,
            dropped: None,
        }
    }

    /// The next packet comes from another source or layer: its numbers continue from the
    /// last ones sent.
    pub fn switch_source(&mut self) {
        self.rebase = true;
    }

    /// A packet of a picture that is not forwarded (a dropped temporal layer): later
    /// pictures close the gap. Any packet of the picture may be passed, any number of times.
    pub fn drop_picture(&mut self, d: &Vp8Descriptor) {
        let Some(pid) = d.picture_id else {
            return;
        };
        if self.rebase || self.dropped == Some(pid) {
            return;
        }
        // Only a picture newer than everything seen shifts what follows; an old one was
        // numbered already.
        if self.highest.is_some_and(|h| !newer(pid, h)) {
            return;
        }
        self.highest = Some(pid);
        self.dropped = Some(pid);
        let delta = self.delta_for(pid).wrapping_sub(1) % PID_MOD;
        self.push_delta(pid.wrapping_add(1) % PID_MOD, delta);
    }

    /// The numbers `d`'s packet goes out with.
    pub fn rewrite(&mut self, d: &Vp8Descriptor) -> Vp8Fields {
        if self.rebase {
            self.rebase = false;
            self.pid_len = 0;
            self.highest = None;
            self.dropped = None;
            if let Some(pid) = d.picture_id {
                let next = self.last_pid.map_or(pid, |l| (l + 1) % PID_MOD);
                self.push_delta(pid, next.wrapping_sub(pid) % PID_MOD);
            }
            if let Some(tl0) = d.tl0picidx {
                let next = self.last_tl0.map_or(tl0, |l| l.wrapping_add(1));
                self.tl0_delta = next.wrapping_sub(tl0);
            }
        }
        let picture_id = d.picture_id.map(|pid| {
            if self.highest.is_none_or(|h| newer(pid, h)) {
                self.highest = Some(pid);
            }
            let out = pid.wrapping_add(self.delta_for(pid)) % PID_MOD;
            if self.last_pid.is_none_or(|l| newer(out, l)) {
                self.last_pid = Some(out);
            }
            out
        });
        let tl0picidx = d.tl0picidx.map(|tl0| {
            let out = tl0.wrapping_add(self.tl0_delta);
            if self
                .last_tl0
                .is_none_or(|l| out.wrapping_sub(l) < 0x80 && out != l)
            {
                self.last_tl0 = Some(out);
            }
            out
        });
        Vp8Fields {
            picture_id,
            tl0picidx,
        }
    }

    /// The delta for input PictureID `pid`: the newest renumbering at or before it.
    fn delta_for(&self, pid: u16) -> u16 {
        self.pid_deltas[..self.pid_len]
            .iter()
            .rev()
            .find(|(from, _)| !newer(*from, pid))
            .or(self.pid_deltas[..self.pid_len].first())
            .map_or(0, |(_, delta)| *delta)
    }

    fn push_delta(&mut self, from: u16, delta: u16) {
        if self.pid_len == HISTORY {
            self.pid_deltas.copy_within(1.., 0);
            self.pid_len -= 1;
        }
        self.pid_deltas[self.pid_len] = (from, delta);
        self.pid_len += 1;
    }
}

/// The frame width and height a VP8 keyframe announces (RFC 6386 §9.1), read from the first
/// packet of the frame (`payload` with its descriptor); `None` for anything else.
pub fn keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    let d = Vp8Descriptor::parse(payload)?;
    if !d.starts_frame() {
        return None;
    }
    let frame = payload.get(d.len..)?;
    // Frame tag (3 bytes, P bit clear for a keyframe), start code, then 14-bit sizes.
    let header = frame.get(..10)?;
    if header[0] & 0x01 != 0 || header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([header[6], header[7]]) & 0x3fff;
    let height = u16::from_le_bytes([header[8], header[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

/// `a` comes after `b` in 15-bit PictureID order.
fn newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b) % PID_MOD;
    d != 0 && d < PID_MOD / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor with a 15-bit PictureID, TL0PICIDX and TID, then two bytes of frame.
    fn packet(pid: u16, tl0: u8, tid: u8, start: bool) -> Vec<u8> {
        let s = if start { 0x10 } else { 0 };
        vec![
            0x80 | s,
            0xe0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            tid << 6,
            0x9d,
            0x01,
        ]
    }

    fn rewrite(r: &mut Vp8Rewriter, p: &[u8]) -> (u16, u8) {
        let d = Vp8Descriptor::parse(p).expect("a descriptor");
        let f = r.rewrite(&d);
        (f.picture_id.unwrap(), f.tl0picidx.unwrap())
    }

    #[test]
    fn parses_every_form() {
        let d = Vp8Descriptor::parse(&packet(0x1234, 7, 2, true)).unwrap();
        assert_eq!(d.picture_id, Some(0x1234));
        assert!(d.long_picture_id);
        assert_eq!((d.tl0picidx, d.tid, d.len), (Some(7), Some(2), 6));
        assert!(d.starts_frame());
        // Short PictureID only.
        let d = Vp8Descriptor::parse(&[0x90, 0x80, 0x05, 0x9d]).unwrap();
        assert_eq!(
            (d.picture_id, d.long_picture_id, d.len),
            (Some(5), false, 3)
        );
        // No extension.
        let d = Vp8Descriptor::parse(&[0x10, 0x9d]).unwrap();
        assert_eq!((d.picture_id, d.len), (None, 1));
        // Truncated anywhere: nothing.
        let full = packet(0x1234, 7, 2, true);
        for n in 0..6 {
            assert_eq!(Vp8Descriptor::parse(&full[..n]), None, "{n} bytes");
        }
    }

    #[test]
    fn write_changes_the_fields_and_nothing_else() {
        let mut p = packet(0x1234, 7, 1, true);
        let d = Vp8Descriptor::parse(&p).unwrap();
        d.write(
            &mut p,
            Vp8Fields {
                picture_id: Some(0x0abc),
                tl0picidx: Some(200),
            },
        );
        let e = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(
            (e.picture_id, e.tl0picidx, e.tid),
            (Some(0x0abc), Some(200), Some(1))
        );
        assert_eq!(&p[6..], &[0x9d, 0x01]);
        // A short field keeps its width.
        let mut s = vec![0x90, 0x80, 0x05, 0x9d];
        let d = Vp8Descriptor::parse(&s).unwrap();
        d.write(
            &mut s,
            Vp8Fields {
                picture_id: Some(0x0185),
                tl0picidx: None,
            },
        );
        assert_eq!(s, vec![0x90, 0x80, 0x05, 0x9d]);
    }

    #[test]
    fn a_switch_continues_the_numbers() {
        let mut r = Vp8Rewriter::new();
        assert_eq!(rewrite(&mut r, &packet(100, 10, 0, true)), (100, 10));
        assert_eq!(rewrite(&mut r, &packet(101, 10, 1, true)), (101, 10));
        r.switch_source();
        // The other layer numbers its pictures far away, and wraps soon.
        assert_eq!(rewrite(&mut r, &packet(32766, 250, 0, true)), (102, 11));
        assert_eq!(rewrite(&mut r, &packet(32767, 250, 1, true)), (103, 11));
        assert_eq!(rewrite(&mut r, &packet(0, 251, 0, true)), (104, 12));
        // A late packet of the first picture after the switch keeps its number.
        assert_eq!(rewrite(&mut r, &packet(32766, 250, 0, false)), (102, 11));
    }

    #[test]
    fn dropped_pictures_leave_no_gap() {
        let mut r = Vp8Rewriter::new();
        // TL0 TL1 TL0 TL1 ...: the TL1 pictures are dropped.
        let mut sent = Vec::new();
        for pid in 500u16..510 {
            let tid = u8::from(pid % 2 == 1);
            for start in [true, false] {
                let p = packet(pid, (pid / 2) as u8, tid, start);
                let d = Vp8Descriptor::parse(&p).unwrap();
                if tid == 1 {
                    r.drop_picture(&d);
                } else {
                    sent.push(rewrite(&mut r, &p).0);
                }
            }
        }
        assert_eq!(sent, vec![500, 500, 501, 501, 502, 502, 503, 503, 504, 504]);
    }

    #[test]
    fn a_late_packet_is_numbered_as_its_picture_was() {
        let mut r = Vp8Rewriter::new();
        assert_eq!(rewrite(&mut r, &packet(10, 1, 0, true)).0, 10);
        r.drop_picture(&Vp8Descriptor::parse(&packet(11, 1, 1, true)).unwrap());
        assert_eq!(rewrite(&mut r, &packet(12, 2, 0, true)).0, 11);
        // The second packet of picture 10 arrives after picture 12.
        assert_eq!(rewrite(&mut r, &packet(10, 1, 0, false)).0, 10);
        // And a late packet of the dropped picture does not shift anything again.
        r.drop_picture(&Vp8Descriptor::parse(&packet(11, 1, 1, false)).unwrap());
        assert_eq!(rewrite(&mut r, &packet(13, 2, 1, true)).0, 12);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = crate::test_rng::XorShift::new(7);
        let mut r = Vp8Rewriter::new();
        rng.for_each_input(20_000, 12, |buf| {
            if let Some(d) = Vp8Descriptor::parse(buf) {
                assert!(d.len <= buf.len());
                match buf.first().map(|b| b % 3) {
                    Some(0) => r.drop_picture(&d),
                    Some(1) => r.switch_source(),
                    _ => {
                        let f = r.rewrite(&d);
                        let mut copy = buf.to_vec();
                        d.write(&mut copy, f);
                        assert_eq!(Vp8Descriptor::parse(&copy).map(|e| e.len), Some(d.len));
                    }
                }
            }
        });
    }

    #[test]
    fn keyframe_sizes_are_read_from_the_frame_header() {
        // Descriptor with a 15-bit PictureID; keyframe tag; start code; 640x360.
        let mut p = vec![0x90, 0x80, 0x81, 0x23, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        p.extend_from_slice(&640u16.to_le_bytes());
        p.extend_from_slice(&360u16.to_le_bytes());
        p.extend_from_slice(&[0; 8]);
        assert_eq!(keyframe_size(&p), Some((640, 360)));
        let mut delta = p.clone();
        delta[4] |= 0x01;
        assert_eq!(keyframe_size(&delta), None, "an interframe");
        assert_eq!(keyframe_size(&p[..12]), None, "truncated");
        let mut later = p.clone();
        later[0] &= !0x10;
        assert_eq!(
            keyframe_size(&later),
            None,
            "not the first packet of the frame"
        );
    }
}
