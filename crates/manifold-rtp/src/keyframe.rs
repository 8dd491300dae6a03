//! Keyframe detection from the first bytes of an RTP payload, per codec.
//!
//! A subscriber can only start, or switch to another layer or source, on a
//! keyframe; this module owns the question "is this packet one?". It reads
//! just the payload descriptor or NAL header each packetization RFC defines,
//! never the codec bitstream beyond a flag, and it answers `false` for
//! anything truncated or inconsistent: a missed keyframe costs a PLI round
//! trip, a false one shows the viewer a broken picture.

use crate::vp8::Vp8Descriptor;

/// A video codec whose RTP payload format this module understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// VP8, RFC 7741.
    Vp8,
    /// VP9, RFC 9628.
    Vp9,
    /// H.264, RFC 6184.
    H264,
    /// H.265, RFC 7798.
    H265,
    /// AV1, the AOMedia "RTP Payload Format For AV1".
    Av1,
}

/// True when this RTP payload (the bytes after the RTP header, extensions and
/// padding) starts or contains a keyframe.
///
/// - VP8: start of partition 0 and the frame header's inverse-key-frame bit
///   clear.
/// - VP9: beginning of a picture that is not inter-picture predicted, in
///   spatial layer 0.
/// - H.264: an IDR slice or SPS, alone, inside a STAP-A, or starting an FU-A.
/// - H.265: an IRAP picture (types 16..=21), VPS or SPS, alone, inside an
///   aggregation packet, or starting a fragmentation unit.
/// - AV1: the first packet of a new coded video sequence.
///
/// Every other packet, and every malformed one, is `false`.
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    let mut r = Reader::new(payload);
    let keyframe = match codec {
        VideoCodec::Vp8 => vp8(payload),
        VideoCodec::Vp9 => vp9(&mut r),
        VideoCodec::H264 => h264(&mut r),
        VideoCodec::H265 => h265(&mut r),
        VideoCodec::Av1 => av1(&mut r),
    };
    keyframe.unwrap_or(false)
}

/// RFC 7741 section 4.2 payload descriptor ([`Vp8Descriptor`]), then the first
/// byte of the VP8 frame header (RFC 6386 section 9.1).
fn vp8(payload: &[u8]) -> Option<bool> {
    let d = Vp8Descriptor::parse(payload)?;
    // Only the first packet of partition 0 carries the frame header.
    if !d.starts_frame() {
        return Some(false);
    }
    let frame_tag = *payload.get(d.len)?;
    // The P bit is an inverse key frame flag: 0 means key frame.
    Some(frame_tag & 0x01 == 0)
}

/// RFC 9628 section 4.2 payload descriptor.
fn vp9(r: &mut Reader<'_>) -> Option<bool> {
    let first = r.u8()?;
    let has_picture_id = first & 0x80 != 0;
    let inter_picture_predicted = first & 0x40 != 0;
    let has_layer_indices = first & 0x20 != 0;
    let flexible = first & 0x10 != 0;
    let begins_frame = first & 0x08 != 0;
    let has_scalability_structure = first & 0x02 != 0;

    if inter_picture_predicted || !begins_frame {
        return Some(false);
    }

    if has_picture_id {
        let picture_id = r.u8()?;
        if picture_id & 0x80 != 0 {
            r.u8()?;
        }
    }

    // Without layer indices the stream has a single spatial layer.
    let mut spatial_id = 0;
    if has_layer_indices {
        let layer = r.u8()?;
        spatial_id = (layer >> 1) & 0x07;
        if !flexible {
            // TL0PICIDX follows the layer indices in non-flexible mode.
            r.u8()?;
        }
    }

    // Reference indices (P_DIFF) are only present when P is set, which we
    // ruled out above. The scalability structure is parsed only to reject a
    // truncated one: a keyframe packet with a broken SS is not usable.
    if has_scalability_structure {
        vp9_scalability_structure(r)?;
    }

    // Higher spatial layers of a key picture are predicted from layer 0, so
    // only layer 0 is a place a subscriber can start.
    Some(spatial_id == 0)
}

/// RFC 9628 section 4.2.1.
fn vp9_scalability_structure(r: &mut Reader<'_>) -> Option<()> {
    let first = r.u8()?;
    let spatial_layers = usize::from(first >> 5) + 1;
    let has_resolution = first & 0x10 != 0;
    let has_picture_group = first & 0x08 != 0;

    if has_resolution {
        // WIDTH and HEIGHT, 16 bits each, per spatial layer.
        r.skip(4 * spatial_layers)?;
    }
    if has_picture_group {
        let pictures = r.u8()?;
        for _ in 0..pictures {
            let picture = r.u8()?;
            let references = usize::from((picture >> 2) & 0x03);
            r.skip(references)?;
        }
    }
    Some(())
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// RFC 6184 section 5.
fn h264(r: &mut Reader<'_>) -> Option<bool> {
    let header = r.u8()?;
    let is_key_type = |nal_type: u8| matches!(nal_type, H264_IDR | H264_SPS);

    match header & 0x1f {
        H264_STAP_A => {
            // A STAP-A with no units is malformed.
            if r.is_empty() {
                return None;
            }
            let mut keyframe = false;
            while !r.is_empty() {
                let unit = r.length_prefixed()?;
                let nal_header = unit.first()?;
                keyframe |= is_key_type(nal_header & 0x1f);
            }
            Some(keyframe)
        }
        H264_FU_A => {
            let fu_header = r.u8()?;
            let start = fu_header & 0x80 != 0;
            Some(start && is_key_type(fu_header & 0x1f))
        }
        nal_type => Some(is_key_type(nal_type)),
    }
}

const H265_AP: u8 = 48;
const H265_FU: u8 = 49;

/// RFC 7798 section 4.4. Decoding order numbers (DONL) are assumed absent:
/// they only appear with `sprop-max-don-diff` > 0, which WebRTC never
/// negotiates.
fn h265(r: &mut Reader<'_>) -> Option<bool> {
    let header = r.u16()?;
    let is_key_type = |nal_type: u8| matches!(nal_type, 16..=21 | 32 | 33);
    let nal_type = |header: u16| ((header >> 9) & 0x3f) as u8;

    match nal_type(header) {
        H265_AP => {
            if r.is_empty() {
                return None;
            }
            let mut keyframe = false;
            while !r.is_empty() {
                let mut unit = Reader::new(r.length_prefixed()?);
                keyframe |= is_key_type(nal_type(unit.u16()?));
            }
            Some(keyframe)
        }
        H265_FU => {
            let fu_header = r.u8()?;
            let start = fu_header & 0x80 != 0;
            Some(start && is_key_type(fu_header & 0x3f))
        }
        other => Some(is_key_type(other)),
    }
}

/// AV1 RTP specification section 4.4, the aggregation header.
fn av1(r: &mut Reader<'_>) -> Option<bool> {
    let aggregation = r.u8()?;
    let continues_previous_obu = aggregation & 0x80 != 0;
    let new_coded_video_sequence = aggregation & 0x08 != 0;
    // The first packet of a sequence cannot continue an OBU from before it,
    // and must carry some OBU data.
    if continues_previous_obu || r.is_empty() {
        return Some(false);
    }
    Some(new_coded_video_sequence)
}

/// A bounds-checked cursor: every read that would run past the end is `None`.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    fn u16(&mut self) -> Option<u16> {
        let bytes = self.take(2)?;
        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(taken)
    }

    /// A unit of an aggregation packet: a 16-bit size, then that many bytes.
    /// A zero size is malformed in both RFC 6184 and RFC 7798; rejecting it
    /// also means every loop over units consumes at least three bytes.
    fn length_prefixed(&mut self) -> Option<&'a [u8]> {
        let size = usize::from(self.u16()?);
        if size == 0 {
            return None;
        }
        self.take(size)
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::XorShift;

    const ALL: [VideoCodec; 5] = [
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::H264,
        VideoCodec::H265,
        VideoCodec::Av1,
    ];

    /// Every strict prefix of a keyframe payload that is shorter than the
    /// bytes the decision depends on must be rejected.
    fn assert_prefixes_rejected(codec: VideoCodec, payload: &[u8], needed: usize) {
        assert!(is_keyframe(codec, payload), "{codec:?} {payload:02x?}");
        for len in 0..needed {
            assert!(
                !is_keyframe(codec, &payload[..len]),
                "{codec:?} prefix {len} of {payload:02x?}"
            );
        }
    }

    #[test]
    fn empty_payload_is_never_a_keyframe() {
        for codec in ALL {
            assert!(!is_keyframe(codec, &[]));
        }
    }

    // VP8. Frame tag byte: bit 0 is P (0 = key frame). A real key frame
    // starts 0x10 0x02 0x00 0x9d 0x01 0x2a ... (size bits, then start code).
    const VP8_KEY_TAG: [u8; 6] = [0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    const VP8_DELTA_TAG: [u8; 3] = [0x31, 0x02, 0x00];

    #[test]
    fn vp8_minimal_descriptor() {
        let mut key = vec![0x10];
        key.extend_from_slice(&VP8_KEY_TAG);
        assert_prefixes_rejected(VideoCodec::Vp8, &key, 2);

        let mut delta = vec![0x10];
        delta.extend_from_slice(&VP8_DELTA_TAG);
        assert!(!is_keyframe(VideoCodec::Vp8, &delta));
    }

    #[test]
    fn vp8_extended_descriptor() {
        // X=1, S=1, PID=0; I, L, T, K all present; 15-bit PictureID.
        let mut key = vec![0x90, 0xf0, 0x80 | 0x12, 0x34, 0x07, 0x20];
        key.extend_from_slice(&VP8_KEY_TAG);
        assert_prefixes_rejected(VideoCodec::Vp8, &key, 7);

        // 7-bit PictureID, only I.
        let mut short_id = vec![0x90, 0x80, 0x12];
        short_id.extend_from_slice(&VP8_KEY_TAG);
        assert_prefixes_rejected(VideoCodec::Vp8, &short_id, 4);

        // Only K (KEYIDX) present: still one byte.
        let mut k_only = vec![0x90, 0x10, 0x05];
        k_only.extend_from_slice(&VP8_KEY_TAG);
        assert_prefixes_rejected(VideoCodec::Vp8, &k_only, 4);

        // Only L.
        let mut l_only = vec![0x90, 0x40, 0x09];
        l_only.extend_from_slice(&VP8_KEY_TAG);
        assert_prefixes_rejected(VideoCodec::Vp8, &l_only, 4);

        // X set, no optional fields at all.
        let mut x_empty = vec![0x90, 0x00];
        x_empty.extend_from_slice(&VP8_KEY_TAG);
        assert_prefixes_rejected(VideoCodec::Vp8, &x_empty, 3);

        let mut delta = vec![0x90, 0xf0, 0x80 | 0x12, 0x34, 0x07, 0x20];
        delta.extend_from_slice(&VP8_DELTA_TAG);
        assert!(!is_keyframe(VideoCodec::Vp8, &delta));
    }

    #[test]
    fn vp8_descriptor_length_is_not_misread() {
        // A 15-bit PictureID whose second byte has bit 0 clear: reading the
        // frame tag one byte early would call this delta frame a key frame.
        let mut delta = vec![0x90, 0x80, 0x80, 0x02];
        delta.extend_from_slice(&VP8_DELTA_TAG);
        assert!(!is_keyframe(VideoCodec::Vp8, &delta));
    }

    #[test]
    fn vp8_not_start_of_partition_zero() {
        // Continuation packet of the key frame's first partition.
        let mut continuation = vec![0x00];
        continuation.extend_from_slice(&VP8_KEY_TAG);
        assert!(!is_keyframe(VideoCodec::Vp8, &continuation));

        // Start of partition 1 (PID=1).
        let mut partition_one = vec![0x11];
        partition_one.extend_from_slice(&VP8_KEY_TAG);
        assert!(!is_keyframe(VideoCodec::Vp8, &partition_one));
    }

    // VP9 first byte: I P L F B E V Z.
    const VP9_I: u8 = 0x80;
    const VP9_P: u8 = 0x40;
    const VP9_L: u8 = 0x20;
    const VP9_F: u8 = 0x10;
    const VP9_B: u8 = 0x08;
    const VP9_E: u8 = 0x04;
    const VP9_V: u8 = 0x02;

    #[test]
    fn vp9_non_flexible_key_picture() {
        // I with 15-bit picture id, L (TID 0, SID 0) + TL0PICIDX, V with SS:
        // one spatial layer with resolution, a picture group of 2 pictures
        // with 1 and 0 references.
        let payload = [
            VP9_I | VP9_L | VP9_B | VP9_E | VP9_V,
            0x80 | 0x01,
            0x23,
            0x00,
            0x05,
            0x18, // N_S=0, Y, G
            0x05,
            0x00,
            0x02,
            0xd0, // 1280x720
            0x02, // N_G
            0x04,
            0x01, // TID 0, R=1, P_DIFF 1
            0x20, // TID 1, R=0
            0xaa, // frame data
        ];
        assert_prefixes_rejected(VideoCodec::Vp9, &payload, 14);
    }

    #[test]
    fn vp9_flexible_key_picture() {
        // Flexible mode: no TL0PICIDX after the layer indices.
        let payload = [VP9_I | VP9_L | VP9_F | VP9_B, 0x12, 0x00, 0xaa];
        assert_prefixes_rejected(VideoCodec::Vp9, &payload, 3);
    }

    #[test]
    fn vp9_minimal_key_picture() {
        // No optional fields: single layer, start of frame, not predicted.
        assert!(is_keyframe(VideoCodec::Vp9, &[VP9_B, 0xaa]));
        assert!(is_keyframe(VideoCodec::Vp9, &[VP9_B | VP9_E]));
    }

    #[test]
    fn vp9_rejects() {
        // Inter-picture predicted.
        assert!(!is_keyframe(
            VideoCodec::Vp9,
            &[
                VP9_I | VP9_P | VP9_L | VP9_F | VP9_B,
                0x12,
                0x00,
                0x02,
                0xaa
            ]
        ));
        // Not the beginning of a frame.
        assert!(!is_keyframe(VideoCodec::Vp9, &[VP9_E, 0xaa]));
        // Spatial layer 1 of a key picture (SID in bits 3..1 of L byte).
        assert!(!is_keyframe(
            VideoCodec::Vp9,
            &[VP9_L | VP9_F | VP9_B, 0x02, 0xaa]
        ));
        // Spatial layer 0 with a non-zero temporal id still counts.
        assert!(is_keyframe(
            VideoCodec::Vp9,
            &[VP9_L | VP9_F | VP9_B, 0x20, 0xaa]
        ));
    }

    #[test]
    fn vp9_truncated_scalability_structure() {
        // N_S = 2 (three layers) with resolutions needs 12 bytes; give 11.
        let mut payload = vec![VP9_B | VP9_V, 0x50];
        payload.extend_from_slice(&[0; 11]);
        assert!(!is_keyframe(VideoCodec::Vp9, &payload));
        payload.push(0);
        assert!(is_keyframe(VideoCodec::Vp9, &payload));

        // A picture group that promises more pictures than there are bytes.
        assert!(!is_keyframe(
            VideoCodec::Vp9,
            &[VP9_B | VP9_V, 0x08, 0x03, 0x04, 0x01]
        ));
        // References promised but missing.
        assert!(!is_keyframe(
            VideoCodec::Vp9,
            &[VP9_B | VP9_V, 0x08, 0x01, 0x08, 0x01]
        ));
        assert!(is_keyframe(
            VideoCodec::Vp9,
            &[VP9_B | VP9_V, 0x08, 0x01, 0x08, 0x01, 0x02]
        ));
    }

    // H.264 NAL header: F(1) NRI(2) type(5).
    const H264_IDR_HDR: u8 = 0x65;
    const H264_SPS_HDR: u8 = 0x67;
    const H264_PPS_HDR: u8 = 0x68;
    const H264_SLICE_HDR: u8 = 0x41;
    const H264_SEI_HDR: u8 = 0x06;

    #[test]
    fn h264_single_nal() {
        assert!(is_keyframe(VideoCodec::H264, &[H264_IDR_HDR, 0x88, 0x84]));
        assert!(is_keyframe(VideoCodec::H264, &[H264_SPS_HDR, 0x42, 0xe0]));
        // A bare NAL header is enough to know the type.
        assert!(is_keyframe(VideoCodec::H264, &[H264_IDR_HDR]));
        assert!(!is_keyframe(VideoCodec::H264, &[H264_PPS_HDR, 0xce]));
        assert!(!is_keyframe(VideoCodec::H264, &[H264_SLICE_HDR, 0x9a]));
        assert!(!is_keyframe(VideoCodec::H264, &[H264_SEI_HDR, 0x05]));
        // Reserved / unsupported packetizations.
        for nal_type in [0u8, 25, 26, 27, 29, 30, 31] {
            assert!(!is_keyframe(
                VideoCodec::H264,
                &[0x60 | nal_type, 0x65, 0x65]
            ));
        }
    }

    fn stap_a(units: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0x78]; // NRI 3, type 24
        for unit in units {
            p.extend_from_slice(&(unit.len() as u16).to_be_bytes());
            p.extend_from_slice(unit);
        }
        p
    }

    #[test]
    fn h264_stap_a() {
        // Parameter sets ahead of an IDR. PPS first so that no prefix is a
        // complete aggregate holding the SPS.
        let sps_pps = stap_a(&[
            &[H264_PPS_HDR, 0xce, 0x3c],
            &[H264_SPS_HDR, 0x42, 0xe0, 0x1f],
        ]);
        assert_prefixes_rejected(VideoCodec::H264, &sps_pps, sps_pps.len());

        // The keyframe NAL last in the aggregate.
        let idr_last = stap_a(&[
            &[H264_SEI_HDR, 0x05],
            &[H264_PPS_HDR],
            &[H264_IDR_HDR, 0x88],
        ]);
        assert!(is_keyframe(VideoCodec::H264, &idr_last));

        let no_key = stap_a(&[&[H264_SEI_HDR, 0x05], &[H264_SLICE_HDR, 0x9a]]);
        assert!(!is_keyframe(VideoCodec::H264, &no_key));
    }

    #[test]
    fn h264_stap_a_malformed() {
        // No units.
        assert!(!is_keyframe(VideoCodec::H264, &[0x78]));
        // Zero-size unit before an SPS.
        assert!(!is_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x00, 0x00, 0x01, H264_SPS_HDR]
        ));
        // Size runs past the end.
        assert!(!is_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x05, H264_SPS_HDR, 0x42]
        ));
        // Trailing single byte where a size should be.
        let mut trailing = stap_a(&[&[H264_SPS_HDR, 0x42]]);
        trailing.push(0x00);
        assert!(!is_keyframe(VideoCodec::H264, &trailing));
        // A huge declared size.
        assert!(!is_keyframe(
            VideoCodec::H264,
            &[0x78, 0xff, 0xff, H264_IDR_HDR, 0x88]
        ));
    }

    #[test]
    fn h264_fu_a() {
        // FU indicator (NRI 3, type 28), FU header S=1 type 5.
        assert_prefixes_rejected(VideoCodec::H264, &[0x7c, 0x85, 0xb8, 0x00], 2);
        assert!(is_keyframe(VideoCodec::H264, &[0x7c, 0x87, 0x42]));
        // Middle and end fragments of an IDR.
        assert!(!is_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x11]));
        assert!(!is_keyframe(VideoCodec::H264, &[0x7c, 0x45, 0x11]));
        // Start of a non-IDR slice.
        assert!(!is_keyframe(VideoCodec::H264, &[0x5c, 0x81, 0x9a]));
    }

    // H.265 NAL header: F(1) type(6) LayerId(6) TID(3); types shifted by 1.
    fn h265_header(nal_type: u8) -> [u8; 2] {
        [nal_type << 1, 0x01]
    }

    #[test]
    fn h265_single_nal() {
        for nal_type in [16u8, 17, 18, 19, 20, 21, 32, 33] {
            let [a, b] = h265_header(nal_type);
            assert_prefixes_rejected(VideoCodec::H265, &[a, b, 0xaf], 2);
        }
        for nal_type in [0u8, 1, 9, 15, 22, 23, 34, 35, 39, 47, 50, 63] {
            let [a, b] = h265_header(nal_type);
            assert!(
                !is_keyframe(VideoCodec::H265, &[a, b, 0xaf]),
                "type {nal_type}"
            );
        }
    }

    fn h265_ap(units: &[&[u8]]) -> Vec<u8> {
        let mut p = h265_header(48).to_vec();
        for unit in units {
            p.extend_from_slice(&(unit.len() as u16).to_be_bytes());
            p.extend_from_slice(unit);
        }
        p
    }

    #[test]
    fn h265_aggregation() {
        let [vps_a, vps_b] = h265_header(32);
        let [sps_a, sps_b] = h265_header(33);
        let [pps_a, pps_b] = h265_header(34);
        let [trail_a, trail_b] = h265_header(1);

        // The keyframe unit last, so that no prefix is a complete aggregate
        // holding it.
        let params = h265_ap(&[&[pps_a, pps_b, 0xc1], &[sps_a, sps_b, 0x01, 0x01]]);
        assert_prefixes_rejected(VideoCodec::H265, &params, params.len());
        let vps_first = h265_ap(&[&[vps_a, vps_b, 0x0c], &[pps_a, pps_b, 0xc1]]);
        assert!(is_keyframe(VideoCodec::H265, &vps_first));

        let no_key = h265_ap(&[&[pps_a, pps_b, 0xc1], &[trail_a, trail_b, 0x00]]);
        assert!(!is_keyframe(VideoCodec::H265, &no_key));

        // No units; a unit too short for its own NAL header; a size past the end.
        assert!(!is_keyframe(VideoCodec::H265, &h265_ap(&[])));
        assert!(!is_keyframe(VideoCodec::H265, &h265_ap(&[&[vps_a]])));
        let mut overrun = h265_ap(&[&[vps_a, vps_b, 0x0c]]);
        overrun[3] = 9;
        assert!(!is_keyframe(VideoCodec::H265, &overrun));
    }

    #[test]
    fn h265_fragmentation_unit() {
        let [a, b] = h265_header(49);
        // FU header: S E type(6).
        assert_prefixes_rejected(VideoCodec::H265, &[a, b, 0x80 | 19, 0xaf], 3);
        assert!(is_keyframe(VideoCodec::H265, &[a, b, 0x80 | 21, 0xaf]));
        // Not the start, or a non-IRAP type.
        assert!(!is_keyframe(VideoCodec::H265, &[a, b, 19, 0xaf]));
        assert!(!is_keyframe(VideoCodec::H265, &[a, b, 0x40 | 19, 0xaf]));
        assert!(!is_keyframe(VideoCodec::H265, &[a, b, 0x80 | 1, 0xaf]));
    }

    // AV1 aggregation header: Z Y W(2) N - - -.
    #[test]
    fn av1_new_coded_video_sequence() {
        // N=1, W=2: the usual first packet of a key frame (sequence header
        // OBU, then frame OBU).
        assert_prefixes_rejected(VideoCodec::Av1, &[0x28, 0x0b, 0x0a, 0x00], 2);
        assert!(is_keyframe(VideoCodec::Av1, &[0x08, 0x0a]));
        // Y (last OBU continues in the next packet) does not matter.
        assert!(is_keyframe(VideoCodec::Av1, &[0x48, 0x0a]));
    }

    #[test]
    fn av1_rejects() {
        // N=0.
        assert!(!is_keyframe(VideoCodec::Av1, &[0x20, 0x32, 0x00]));
        // N=1 but Z=1: a sequence cannot start with a continuation.
        assert!(!is_keyframe(VideoCodec::Av1, &[0x88, 0x0a]));
        // N=1 with no OBU data.
        assert!(!is_keyframe(VideoCodec::Av1, &[0x08]));
    }

    #[test]
    fn codecs_do_not_cross_match() {
        // A VP8 key frame read as H.264 is a type-16 NAL (reserved): not key.
        let mut vp8_key = vec![0x10];
        vp8_key.extend_from_slice(&VP8_KEY_TAG);
        assert!(!is_keyframe(VideoCodec::H264, &vp8_key));
        // An H.264 IDR header read as VP8 has S=0: not key.
        assert!(!is_keyframe(VideoCodec::Vp8, &[H264_IDR_HDR, 0x88]));
    }

    #[test]
    fn random_bytes_never_panic() {
        // First bytes that reach each parser's deeper paths.
        const LEADS: [&[u8]; 8] = [
            &[0x90],       // VP8 extended start of partition 0
            &[0xaa],       // VP9 I L B V
            &[0x3a],       // VP9 L F B V
            &[0x78],       // H.264 STAP-A
            &[0x7c],       // H.264 FU-A
            &[0x60, 0x01], // H.265 AP
            &[0x62, 0x01], // H.265 FU
            &[0x08],       // AV1 N
        ];
        let mut rng = XorShift::new(0x6b65_7966);
        let mut keyframes = [0usize; 5];
        let mut i = 0usize;
        rng.for_each_input(100_000, 1500, |payload| {
            let lead = LEADS[i % LEADS.len()];
            i += 1;
            if i.is_multiple_of(2) && payload.len() >= lead.len() {
                payload[..lead.len()].copy_from_slice(lead);
            }
            for (k, codec) in ALL.iter().enumerate() {
                keyframes[k] += usize::from(is_keyframe(*codec, payload));
            }
        });
        // Each codec sees both answers, so the test is not trivially false.
        for (k, codec) in ALL.iter().enumerate() {
            assert!(keyframes[k] > 0, "{codec:?} never saw a keyframe");
            assert!(keyframes[k] < 100_000, "{codec:?} always saw a keyframe");
        }
    }

    #[test]
    fn aggregates_of_tiny_units_terminate() {
        // The worst case for the unit loops: 1-byte units back to back.
        let mut stap = vec![0x78];
        let mut ap = h265_header(48).to_vec();
        for _ in 0..20_000 {
            stap.extend_from_slice(&[0x00, 0x01, H264_SLICE_HDR]);
            ap.extend_from_slice(&[0x00, 0x02, 0x02, 0x01]);
        }
        assert!(!is_keyframe(VideoCodec::H264, &stap));
        assert!(!is_keyframe(VideoCodec::H265, &ap));
        stap.extend_from_slice(&[0x00, 0x01, H264_IDR_HDR]);
        assert!(is_keyframe(VideoCodec::H264, &stap));
    }
}
