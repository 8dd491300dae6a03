#!/usr/bin/python3
"""GStreamer's webrtcbin against Manifold: one pipeline publishes VP8 + Opus over WHIP,
a second plays the room over WHEP and decodes what arrives.

webrtcbin is a real non-browser stack (libnice ICE, OpenSSL DTLS; on Debian 12, version
1.22, it presents an RSA certificate), so this checks interoperability, not just our own
client against our own server.

Usage: gst_whip_whep.py BASE_URL ROOM SECONDS
With GST_ICE_LOCAL_IP set, libnice gathers on that address only (it otherwise skips
loopback interfaces, so 127.0.0.1 works only when named here).
Prints one JSON line with what was seen and exits 0 when the player decoded video frames
and audio buffers, 1 otherwise.
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

# What the player must decode in the time given: a 15 fps stream and 50 Opus packets a
# second leave a wide margin below these.
MIN_VIDEO_FRAMES = 30
MIN_AUDIO_BUFFERS = 50


def post_sdp(url, sdp):
    """POST an SDP offer; returns (answer, absolute Location) or raises with the body."""
    req = urllib.request.Request(
        url, data=sdp.encode(), headers={"content-type": "application/sdp"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode(), urllib.parse.urljoin(url, r.headers["location"])
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{url}: HTTP {e.code} {e.read().decode()}") from e


def delete(url):
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10)
    except urllib.error.URLError as e:
        print(f"DELETE {url}: {e}", file=sys.stderr)


class Peer:
    """One webrtcbin that offers, waits for all its candidates (WHIP/WHEP without
    trickle), POSTs the offer and applies the answer."""

    def __init__(self, name, pipeline, endpoint, on_fail):
        self.name = name
        self.pipeline = pipeline
        self.endpoint = endpoint
        self.on_fail = on_fail
        self.location = None
        self.webrtc = pipeline.get_by_name("webrtc")
        self.webrtc.connect("on-negotiation-needed", self._negotiate)
        self.webrtc.connect("notify::ice-gathering-state", self._gathered)
        local_ip = os.environ.get("GST_ICE_LOCAL_IP")
        if local_ip:
            # webrtcbin 1.22 hands its ICE agent out without a reference of its own: keep
            # Python's for the peer's lifetime, or dropping it frees the agent.
            self.ice = self.webrtc.get_property("ice-agent")
            self.ice.emit("add-local-ip-address", local_ip)

    def start(self):
        self.pipeline.set_state(Gst.State.PLAYING)

    def stop(self):
        self.pipeline.set_state(Gst.State.NULL)
        if self.location:
            delete(self.location)

    def state(self):
        return self.webrtc.get_property("connection-state").value_nick

    def _negotiate(self, webrtc):
        promise = Gst.Promise.new_with_change_func(self._offered, None)
        webrtc.emit("create-offer", None, promise)

    def _offered(self, promise, _):
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply else None
        if offer is None:
            self.on_fail(f"{self.name}: no offer ({reply.to_string() if reply else 'no reply'})")
            return
        self.webrtc.emit("set-local-description", offer, None)

    def _gathered(self, webrtc, _):
        if webrtc.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return
        offer = webrtc.get_property("local-description").sdp.as_text()
        try:
            answer, self.location = post_sdp(self.endpoint, offer)
        except (RuntimeError, urllib.error.URLError) as e:
            self.on_fail(f"{self.name}: {e}")
            return
        _, msg = GstSdp.SDPMessage.new_from_text(answer)
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        webrtc.emit("set-remote-description", desc, None)


def publisher(base, room, on_fail):
    pipeline = Gst.parse_launch(
        "webrtcbin name=webrtc bundle-policy=max-bundle "
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 "
        "! vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt=96 "
        "! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! webrtc. "
        "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc "
        "! rtpopuspay pt=111 "
        "! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! webrtc."
    )
    return Peer("publisher", pipeline, f"{base}/whip/{room}", on_fail)


def player(base, room, counts, on_fail):
    # parse_launch of a lone element returns that element, so the pipeline is built here.
    pipeline = Gst.Pipeline.new("player")
    webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
    webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
    pipeline.add(webrtc)
    for caps in (
        "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
        # Opus is always signalled with two channels (RFC 7587); without them the offer
        # says OPUS/48000, which is not Opus to an answerer.
        "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,"
        "encoding-params=(string)2",
    ):
        webrtc.emit(
            "add-transceiver",
            GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
            Gst.Caps.from_string(caps),
        )

    def decoded(kind):
        def count(*_):
            counts[kind] += 1

        return count

    def on_pad(_, pad):
        if pad.direction != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps().get_structure(0)
        kind = caps.get_string("media")
        print(f"player: {kind} stream arrived ({caps.get_string('encoding-name')})", file=sys.stderr)
        chain = {
            "video": "rtpvp8depay ! vp8dec ! fakesink name=sink signal-handoffs=true sync=false",
            "audio": "rtpopusdepay ! opusdec ! fakesink name=sink signal-handoffs=true sync=false",
        }.get(kind)
        if chain is None:
            return
        bin_ = Gst.parse_bin_from_description(chain, True)
        bin_.get_by_name("sink").connect("handoff", decoded(kind))
        pipeline.add(bin_)
        bin_.sync_state_with_parent()
        pad.link(bin_.get_static_pad("sink"))

    webrtc.connect("pad-added", on_pad)
    return Peer("player", pipeline, f"{base}/whep/{room}", on_fail)


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    base, room, seconds = sys.argv[1].rstrip("/"), sys.argv[2], int(sys.argv[3])
    Gst.init(None)
    loop = GLib.MainLoop()
    failures = []

    def fail(message):
        failures.append(message)
        loop.quit()

    counts = {"video": 0, "audio": 0}
    pub = publisher(base, room, fail)
    play = player(base, room, counts, fail)
    states = {}

    def watch():
        states["publisher"] = pub.state()
        if states["publisher"] == "connected" and "player" not in states:
            # The room has a publisher now: play it.
            states["player"] = "new"
            play.start()
        elif "player" in states:
            states["player"] = play.state()
        return True

    pub.start()
    GLib.timeout_add(200, watch)
    GLib.timeout_add_seconds(seconds, loop.quit)
    loop.run()
    watch()
    play.stop()
    pub.stop()

    ok = (
        not failures
        and counts["video"] >= MIN_VIDEO_FRAMES
        and counts["audio"] >= MIN_AUDIO_BUFFERS
    )
    print(
        json.dumps(
            {
                "ok": ok,
                "gstreamer": Gst.version_string(),
                "states": states,
                "video_frames_decoded": counts["video"],
                "audio_buffers_decoded": counts["audio"],
                "failures": failures,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
